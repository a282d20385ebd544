package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

// Event is a WorkOS event as the worker handles it.
type Event struct {
	ID        string
	Type      string
	CreatedAt time.Time
	Data      json.RawMessage
	// ref caches what parsed() read of Data: the dispatcher reads the recipient, the delivery
	// the rest.
	ref *parsedRef
	// request, for an email the app requested (request.go), is its content; such an Event
	// has no Type or Data.
	request *sealedRequest
}

type parsedRef struct {
	ref eventRef
	err error
}

// parsed returns parseEvent(e), parsing it once.
func (e *Event) parsed() (eventRef, error) {
	if e.ref == nil {
		ref, err := parseEvent(e.Type, e.Data)
		e.ref = &parsedRef{ref, err}
	}
	return e.ref.ref, e.ref.err
}

// eventRef is what the worker reads of an event (events carry no secrets): the kind it causes,
// through which trigger, the object the email is built from, and the address it names.
type eventRef struct {
	kind    *kinds.Kind    // nil: no kind handles the event type
	trigger *kinds.Trigger // of kind
	// ObjectID is the object the trigger names (kinds.Trigger.ObjectField).
	ObjectID string
	Email    string
	// Unmet is, when the data does not say what the trigger requires, the reason it is skipped.
	Unmet string
	// ExpiresAt is the object's expiry as the event shows it (zero when it does not): an
	// expired code is skipped without a Get.
	ExpiresAt time.Time
}

// parseEvent reads an event's data for its kind. Every id in it must have the shape of a
// WorkOS id, since ids go into URL paths. An event type no kind handles has an empty eventRef.
func parseEvent(eventType string, data json.RawMessage) (eventRef, error) {
	k, trig, ok := kinds.ForEvent(eventType)
	if !ok {
		return eventRef{}, nil
	}
	ref := eventRef{kind: k, trigger: trig}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return ref, fmt.Errorf("event data is not a JSON object: %w", err)
	}
	for name, raw := range fields {
		if name != "id" && !strings.HasSuffix(name, "_id") {
			continue
		}
		if id, isString := jsonString(raw); isString && id != "" && !workosapi.ValidObjectID(id) {
			return ref, fmt.Errorf("event data has no valid object id (%s %q)", name, truncate(id, 80))
		}
	}
	switch id, isString := jsonString(fields[trig.ObjectField]); {
	case len(fields[trig.ObjectField]) == 0 || string(fields[trig.ObjectField]) == "null" || isString && id == "":
		return ref, fmt.Errorf("event data names no %s object (no %s)", k.Object, trig.ObjectField)
	case !isString:
		return ref, fmt.Errorf("event data has no valid object id (%s is %s)", trig.ObjectField, truncate(string(fields[trig.ObjectField]), 40))
	default:
		ref.ObjectID = id
	}
	if raw, ok := fields["email"]; ok {
		if ref.Email, ok = jsonString(raw); !ok && string(raw) != "null" {
			return ref, errors.New("event data has an email that is not a string")
		}
	}
	if s, ok := jsonString(fields["expires_at"]); ok {
		ref.ExpiresAt, _ = time.Parse(time.RFC3339Nano, s) // unreadable: zero, and the Get decides
	}
	for _, f := range trig.Require {
		raw := fields[f.Name]
		got, isString := jsonString(raw)
		if !isString {
			got = string(raw)
		}
		if got != f.Value {
			ref.Unmet = fmt.Sprintf("%s (%s: %s)", trig.Skip, f.Name, truncate(orDefault(string(raw), "missing"), 40))
			break
		}
	}
	return ref, nil
}

// jsonString unquotes raw when it is a JSON string.
func jsonString(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// retryEvent rebuilds the event behind a record an operator queued for retry, from its kind and
// object: its kind's first trigger, with the fields that trigger requires, enough for the same
// checks as the first time. It has no email, so the check of the object's email against the
// event's is skipped.
func retryEvent(kind, objectID string) (eventType string, data json.RawMessage) {
	k, ok := kinds.Get(kind)
	if !ok || len(k.Triggers) == 0 {
		return "", nil // a requested email: the store refuses its retry
	}
	t := k.Triggers[0]
	fields := map[string]json.RawMessage{t.ObjectField: json.RawMessage(strconv.Quote(objectID))}
	for _, f := range t.Require {
		fields[f.Name] = json.RawMessage(strconv.Quote(f.Value))
	}
	data, _ = json.Marshal(fields)
	return t.Event, data
}

// recipientKey is the queue of the emails to the address an event names, "" when it names none:
// they go out one at a time, in the order of their events.
func recipientKey(ref eventRef) string {
	if ref.Email == "" {
		return ""
	}
	return "to:" + strings.ToLower(ref.Email)
}

// orderKeys are the queues an event waits in: its id's, its recipient's, and for a kind sent
// once per object its once-key's, so two welcomes of one user never run at once (the second
// sees the first's claim).
func orderKeys(ev *Event) []string {
	keys := []string{"id:" + ev.ID}
	ref, err := ev.parsed()
	if err != nil || ref.kind == nil {
		return keys
	}
	if to := recipientKey(ref); to != "" {
		keys = append(keys, to)
	}
	if key := ref.kind.OnceKey(ref.ObjectID); key != "" {
		keys = append(keys, "once:"+key)
	}
	return keys
}
