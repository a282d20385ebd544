package store

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// SES's reports land on the record by message id, once each; trace finds a person's records by
// the keyed hash of the address in any case; the file holds no address; pruning drops the index.
func TestFeedbackAndTrace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := open(t, path)
	const addr = "Jane.Doe@Customer.test"
	hash := s.RecipientHash(addr)
	if hash != s.RecipientHash("  jane.doe@customer.TEST ") || hash == s.RecipientHash("john@customer.test") || !recipientShape(hash) {
		t.Fatalf("recipient hash %q: not normalized, or not distinct", hash)
	}
	first := rec("event_01", "magic_auth", Sent, "magic_auth_1", t0)
	first.MessageID, first.Recipient = "0100018f-msg-1", hash
	second := rec("event_02", "password_reset", Sent, "password_reset_2", t0.Add(time.Minute))
	second.MessageID, second.Recipient = "0100018f-msg-2", hash
	other := rec("event_03", "magic_auth", Sent, "magic_auth_3", t0.Add(2*time.Minute))
	other.MessageID, other.Recipient = "0100018f-msg-3", s.RecipientHash("john@customer.test")
	save(t, s, first, second, other)

	bounce := FeedbackReport{Outcome: "bounced", At: t0.Add(time.Hour), Detail: "Permanent/General", Permanent: true}
	for range 2 { // SQS delivers at least once
		id, kind, found, err := s.RecordFeedback(first.MessageID, bounce)
		if err != nil || !found || id != "event_01" || kind != "magic_auth" {
			t.Fatalf("record: %q %q %v %v", id, kind, found, err)
		}
	}
	if _, _, err := recordAgain(s, first.MessageID, FeedbackReport{Outcome: "bounced", At: t0.Add(2 * time.Hour), Detail: "Transient/General"}); err != nil {
		t.Fatal(err)
	}
	if _, _, found, err := s.RecordFeedback("not-ours", bounce); found || err != nil {
		t.Errorf("a message no record has: found %v, %v", found, err)
	}
	if _, _, _, err := s.RecordFeedback(second.MessageID, FeedbackReport{Outcome: "delivered", At: t0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Trace(s.RecipientHash("JANE.DOE@customer.test"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].EventID != "event_02" || got[1].EventID != "event_01" {
		t.Fatalf("trace: %+v, want event_02 then event_01", got)
	}
	if f := got[1].Feedback; f == nil || !f.BouncedAt.Equal(t0.Add(time.Hour)) || f.Bounce != "Permanent/General" || !f.BouncePermanent {
		t.Errorf("the bounce, recorded once at its first report: %+v", f)
	}
	if f := got[0].Feedback; f == nil || !f.DeliveredAt.Equal(t0.Add(time.Hour)) {
		t.Errorf("the delivery: %+v", f)
	}

	// Pruned with its record, the index entry goes too.
	if _, err := s.Prune(t0.Add(30*time.Second), 100); err != nil {
		t.Fatal(err)
	}
	if _, _, found, _ := s.RecordFeedback(first.MessageID, bounce); found {
		t.Error("feedback found a pruned record")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"jane.doe", "Jane.Doe", "john@"} {
		if bytes.Contains(bytes.ToLower(b), bytes.ToLower([]byte(a))) {
			t.Errorf("the store file holds %q", a)
		}
	}
	reopened := open(t, path) // the records with feedback read back
	if got, err := reopened.Trace(hash); err != nil || len(got) != 1 || got[0].Feedback == nil {
		t.Errorf("after reopening: %+v %v", got, err)
	}
}

func recordAgain(s *Store, id string, r FeedbackReport) (string, bool, error) {
	eventID, _, found, err := s.RecordFeedback(id, r)
	return eventID, found, err
}
