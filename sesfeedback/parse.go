// Package sesfeedback reads what SES learned about sent emails (delivered, bounced, complained,
// delayed, rejected) from an SQS queue that an SES configuration set's event destination feeds,
// through SNS or EventBridge: no inbound network. It parses the notifications and hands each to
// the store; a message leaves the queue only once its outcome is recorded.
package sesfeedback

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Outcome is what SES says happened to a message.
type Outcome string

// The outcomes recorded. Send and the engagement events (Open, Click) say nothing about
// arrival and are not recorded.
const (
	Delivered Outcome = "delivered"
	Bounced   Outcome = "bounced"
	Complaint Outcome = "complaint"
	Delayed   Outcome = "delayed"
	Rejected  Outcome = "rejected"
	Ignored   Outcome = "ignored" // an SES event of another type (Send, Open, Click, ...)
)

// Event is one SES event about one sent message. It never holds an address.
type Event struct {
	// MessageID is SES's id of the message, as SendEmail returned it.
	MessageID string
	Outcome   Outcome
	// At is when it happened, by SES's clock.
	At time.Time
	// Detail: the bounce type and subtype ("Permanent/General"), the complaint feedback type,
	// the delay type, or the rejection's reason.
	Detail string
	// Permanent: a bounce SES will not retry (Permanent): the address does not take mail.
	Permanent bool
	// Type is SES's own event type (Bounce, Delivery, ...).
	Type string
}

// ErrForeign is a queue message that is not an SES event (another service's, an SNS
// subscription confirmation): it is dropped from the queue.
var ErrForeign = errors.New("not an SES event notification")

// Parse reads a queue message's body in any of the envelopes SES events arrive in: SNS (the
// event in Message, raw message delivery off), EventBridge (the event in detail), or the bare
// event (SNS raw message delivery). Both event publishing (eventType) and identity feedback
// notifications (notificationType) are understood.
func Parse(body []byte) (Event, error) {
	var env struct {
		Type    string          `json:"Type"`
		Message *string         `json:"Message"`
		Source  string          `json:"source"`
		Detail  json.RawMessage `json:"detail"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return Event{}, fmt.Errorf("%w: not JSON (%v)", ErrForeign, err)
	}
	switch {
	case env.Type == "Notification" && env.Message != nil:
		return parseEvent([]byte(*env.Message))
	case env.Type != "":
		return Event{}, fmt.Errorf("%w: an SNS %s message", ErrForeign, oneWord(env.Type))
	case env.Source == "aws.ses" && len(env.Detail) > 0:
		return parseEvent(env.Detail)
	case env.Source != "":
		return Event{}, fmt.Errorf("%w: an EventBridge event from %s", ErrForeign, oneWord(env.Source))
	}
	return parseEvent(body)
}

// sesEvent is the part of an SES event record this daemon reads.
type sesEvent struct {
	EventType        string `json:"eventType"`
	NotificationType string `json:"notificationType"`
	Mail             struct {
		MessageID string    `json:"messageId"`
		Timestamp time.Time `json:"timestamp"`
	} `json:"mail"`
	Bounce *struct {
		BounceType    string    `json:"bounceType"`
		BounceSubType string    `json:"bounceSubType"`
		Timestamp     time.Time `json:"timestamp"`
	} `json:"bounce"`
	Complaint *struct {
		FeedbackType string    `json:"complaintFeedbackType"`
		Timestamp    time.Time `json:"timestamp"`
	} `json:"complaint"`
	Delivery *struct {
		Timestamp time.Time `json:"timestamp"`
	} `json:"delivery"`
	DeliveryDelay *struct {
		DelayType string    `json:"delayType"`
		Timestamp time.Time `json:"timestamp"`
	} `json:"deliveryDelay"`
	Reject *struct {
		Reason string `json:"reason"`
	} `json:"reject"`
}

func parseEvent(b []byte) (Event, error) {
	var e sesEvent
	if err := json.Unmarshal(b, &e); err != nil {
		return Event{}, fmt.Errorf("%w: unreadable event (%v)", ErrForeign, err)
	}
	typ := e.EventType
	if typ == "" {
		typ = e.NotificationType
	}
	if typ == "" || e.Mail.MessageID == "" || len(e.Mail.MessageID) > 200 || strings.ContainsAny(e.Mail.MessageID, " \r\n") {
		return Event{}, fmt.Errorf("%w: no eventType and mail.messageId", ErrForeign)
	}
	ev := Event{MessageID: e.Mail.MessageID, Type: oneWord(typ), At: e.Mail.Timestamp}
	switch {
	case typ == "Bounce" && e.Bounce != nil:
		ev.Outcome, ev.At = Bounced, orTime(e.Bounce.Timestamp, ev.At)
		ev.Detail = oneWord(e.Bounce.BounceType) + "/" + oneWord(e.Bounce.BounceSubType)
		ev.Permanent = e.Bounce.BounceType == "Permanent"
	case typ == "Complaint" && e.Complaint != nil:
		ev.Outcome, ev.At, ev.Detail = Complaint, orTime(e.Complaint.Timestamp, ev.At), oneWord(e.Complaint.FeedbackType)
	case typ == "Delivery" && e.Delivery != nil:
		ev.Outcome, ev.At = Delivered, orTime(e.Delivery.Timestamp, ev.At)
	case typ == "DeliveryDelay" && e.DeliveryDelay != nil:
		ev.Outcome, ev.At, ev.Detail = Delayed, orTime(e.DeliveryDelay.Timestamp, ev.At), oneWord(e.DeliveryDelay.DelayType)
	case typ == "Reject" && e.Reject != nil:
		ev.Outcome, ev.Detail = Rejected, oneWord(e.Reject.Reason)
	default:
		ev.Outcome = Ignored
	}
	return ev, nil
}

func orTime(t, d time.Time) time.Time {
	if t.IsZero() {
		return d
	}
	return t
}

// oneWord bounds text from the queue that ends up in logs and records, and drops any that names
// an address.
func oneWord(s string) string {
	if strings.Contains(s, "@") {
		return "(withheld: it names an address)"
	}
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}
