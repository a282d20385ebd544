package admin

import (
	"net/http"
	"time"

	"github.com/workos-emailer/workos-emailer/store"
)

// Tracer finds the deliveries to one address by its keyed hash; *store.Store is one.
type Tracer interface {
	RecipientHash(address string) string
	Trace(recipient string) ([]store.Delivery, error)
	Path() string
}

// Trace is the JSON of `trace --json` and GET /trace?email= on the control socket: every
// delivery to one address the store still holds, newest first. It does not repeat the address.
type Trace struct {
	Source      string          `json:"source"`
	GeneratedAt time.Time       `json:"generated_at"`
	StorePath   string          `json:"store_path"`
	Count       int             `json:"count"`
	Deliveries  []TraceDelivery `json:"deliveries"`
}

// TraceDelivery is one delivery in a Trace.
type TraceDelivery struct {
	EventID        string          `json:"event_id"`
	Kind           string          `json:"kind"`
	State          string          `json:"state"`
	Reason         string          `json:"reason"`
	Attempts       int             `json:"attempts"`
	EventCreatedAt time.Time       `json:"event_created_at"`
	FirstSeenAt    time.Time       `json:"first_seen_at"`
	UpdatedAt      time.Time       `json:"updated_at"`
	MessageID      string          `json:"ses_message_id"`
	MaybeDuplicate bool            `json:"maybe_duplicate"`
	Feedback       *store.Feedback `json:"feedback"`
}

// Origin says who built the document and about which store.
func (d *Trace) Origin() (source, storePath string) { return d.Source, d.StorePath }

// BuildTrace reads the deliveries to address.
func BuildTrace(st Tracer, address string, now time.Time, source string) (Trace, error) {
	recs, err := st.Trace(st.RecipientHash(address))
	if err != nil {
		return Trace{}, err
	}
	doc := Trace{Source: source, GeneratedAt: now.UTC(), StorePath: absPath(st.Path()), Count: len(recs), Deliveries: []TraceDelivery{}}
	for _, d := range recs {
		doc.Deliveries = append(doc.Deliveries, TraceDelivery{EventID: d.EventID, Kind: d.Kind, State: string(d.State),
			Reason: d.Reason, Attempts: d.Attempts, EventCreatedAt: d.EventCreatedAt.UTC(), FirstSeenAt: d.FirstSeenAt.UTC(),
			UpdatedAt: d.UpdatedAt.UTC(), MessageID: d.MessageID, MaybeDuplicate: d.MaybeDuplicate, Feedback: d.Feedback})
	}
	return doc, nil
}

// TraceHandler serves GET /trace?email=ADDRESS. Only on the control socket: the address is
// personal data, and the admin listener's answers are not for anyone who can reach it.
func TraceHandler(st Tracer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		email := r.URL.Query().Get("email")
		if email == "" {
			writeJSON(w, http.StatusUnprocessableEntity, errorAnswer{"give the address: /trace?email=ADDRESS"})
			return
		}
		jsonHandler(func() (any, error) { return BuildTrace(st, email, time.Now(), SourceDaemon) }).ServeHTTP(w, r)
	})
}
