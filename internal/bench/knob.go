package bench

import (
	"reflect"
	"regexp"
)

// The SES rate limit is being added to the worker in parallel, under a name this benchmark
// cannot know yet. setRateKnob looks for a numeric field whose name says it is a send rate
// (MaxSendRate, SendRate, RateLimit, ...) in each of the structs given (pointers), sets the
// first it finds to rate (emails per second) and returns its name, or "" when there is none.
// A field whose zero value means "read MaxSendRate from SES GetAccount" is covered too: the
// fake SES answers GetAccount with the scenario's rate.
var knobName = regexp.MustCompile(`(?i)^(max)?(send|sending|email)s?_?(rate|per_?sec(ond)?)(_?limit)?$|^(max_?)?rate(_?limit)?$`)

func setRateKnob(rate float64, structs ...any) string {
	for _, p := range structs {
		v := reflect.ValueOf(p)
		if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
			continue
		}
		v = v.Elem()
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			fv := v.Field(i)
			if !f.IsExported() || !knobName.MatchString(f.Name) || !fv.CanSet() {
				continue
			}
			switch fv.Kind() {
			case reflect.Float32, reflect.Float64:
				fv.SetFloat(rate)
			case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
				if f.Type.PkgPath() == "time" { // a Duration is no rate
					continue
				}
				fv.SetInt(int64(rate))
			default:
				continue
			}
			return t.String() + "." + f.Name // e.g. worker.Options.MaxSendRate
		}
	}
	return ""
}
