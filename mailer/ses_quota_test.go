package mailer

import (
	"context"
	"net/http"
	"testing"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
)

func TestSESQuotaReadsGetAccount(t *testing.T) {
	fake := fakeses.New()
	ses := newTestSES(t, fake)
	q, err := ses.Quota(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if q.MaxSendRate != 14 || q.Max24HourSend != 50000 || q.SentLast24Hours != 0 || !q.SendingEnabled || q.Sandbox {
		t.Errorf("quota %+v", q)
	}
	// Each read reports the account as it is now: a status page shows the sandbox live.
	for _, tc := range []struct{ sandbox, sending bool }{{true, true}, {true, false}, {false, true}} {
		fake.SetSandbox(tc.sandbox)
		fake.SetSendingEnabled(tc.sending)
		if q, err := ses.Quota(context.Background()); err != nil || q.Sandbox != tc.sandbox || q.SendingEnabled != tc.sending {
			t.Errorf("sandbox %v sending %v: quota %+v, %v", tc.sandbox, tc.sending, q, err)
		}
	}
	fake.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		fakeses.WriteError(w, http.StatusForbidden, "AccessDeniedException", "not allowed")
		return true
	}
	if _, err := ses.Quota(context.Background()); err == nil {
		t.Error("a refused GetAccount returned no error")
	}
}
