package fakeses

import (
	"io"
	"net/http"
	"strconv"

	"github.com/buger/jsonparser"
)

// Accept handles a SendEmail request the way ServeHTTP does (same checks, same answers) but
// keeps no copy of the message, so a load test can send more mail than memory should hold.
// Call it from Intercept. accepted, when not nil, sees each accepted message, without its
// bodies, after it is accepted and before the answer is written. It reports whether the
// message was accepted.
//
// It reads only the fields it checks and reports, with jsonparser, which skips the bodies
// without decoding them: encoding/json would spend more CPU on the bodies than the client
// under test spends sending them, and a load test on a small machine would mostly measure the
// fake. It does not validate the rest of the JSON; ServeHTTP does.
func (s *Server) Accept(w http.ResponseWriter, r *http.Request, accepted func(Message)) bool {
	if r.Header.Get("Authorization") == "" {
		WriteError(w, http.StatusForbidden, "MissingAuthenticationTokenException", "Missing Authentication Token")
		return false
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		WriteError(w, http.StatusBadRequest, "BadRequestException", "Could not read request body")
		return false
	}
	m, ok := leanMessage(body)
	if !ok {
		WriteError(w, http.StatusBadRequest, "BadRequestException", "Missing required field")
		return false
	}
	if s.refuse(w, r, m.From, m.To) {
		return false
	}
	s.mu.Lock()
	n := s.requests // ServeHTTP counted this request before Intercept: unique per request
	s.mu.Unlock()
	m.MessageID = "0100018f-lean-" + strconv.Itoa(1e9 + n)[1:] + "-000000"
	if accepted != nil {
		accepted(m)
	}
	writeJSON(w, http.StatusOK, map[string]any{"MessageId": m.MessageID})
	return true
}

// leanMessage reads a SendEmail body's addresses, subject and tags in one pass; ok is false
// when a required field is missing.
func leanMessage(body []byte) (m Message, ok bool) {
	paths := [][]string{
		{"FromEmailAddress"}, {"Destination", "ToAddresses"}, {"ReplyToAddresses"},
		{"Content", "Simple", "Subject", "Data"}, {"ConfigurationSetName"}, {"EmailTags"},
		{"Content", "Simple"},
	}
	strs := func(dst *[]string, v []byte) {
		_, _ = jsonparser.ArrayEach(v, func(v []byte, t jsonparser.ValueType, _ int, _ error) {
			if t == jsonparser.String {
				if s, err := jsonparser.ParseString(v); err == nil {
					*dst = append(*dst, s)
				}
			}
		})
	}
	simple := false
	m.Tags = map[string]string{}
	jsonparser.EachKey(body, func(i int, v []byte, t jsonparser.ValueType, err error) {
		if err != nil {
			return
		}
		switch i {
		case 0:
			m.From, _ = jsonparser.ParseString(v)
		case 1:
			strs(&m.To, v)
		case 2:
			strs(&m.ReplyTo, v)
		case 3:
			m.Subject, _ = jsonparser.ParseString(v)
		case 4:
			m.ConfigurationSet, _ = jsonparser.ParseString(v)
		case 5:
			_, _ = jsonparser.ArrayEach(v, func(v []byte, _ jsonparser.ValueType, _ int, _ error) {
				name, err1 := jsonparser.GetString(v, "Name")
				value, err2 := jsonparser.GetString(v, "Value")
				if err1 == nil && err2 == nil {
					m.Tags[name] = value
				}
			})
		case 6:
			simple = t == jsonparser.Object
		}
	}, paths...)
	return m, m.From != "" && len(m.To) > 0 && simple
}
