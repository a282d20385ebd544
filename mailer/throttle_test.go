package mailer

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
)

func TestThrottledNamesOnlyThrottling(t *testing.T) {
	for _, tc := range []struct {
		status    int
		code      string
		throttled bool
	}{
		{429, "TooManyRequestsException", true},
		{400, "ThrottlingException", true},
		{400, "Throttling", true},
		{503, "ServiceUnavailable", false},
		{500, "InternalFailure", false},
		{400, "MessageRejected", false},
		{400, "SendingPausedException", false},
	} {
		fake := fakeses.New()
		fake.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
			fakeses.WriteError(w, tc.status, tc.code, "injected")
			return true
		}
		s := newTestSES(t, fake)
		_, err := s.Send(context.Background(), Message{To: "a@example.com"})
		if Throttled(err) != tc.throttled {
			t.Errorf("%s: Throttled = %v", tc.code, !tc.throttled)
		}
		if !Throttled(fmt.Errorf("wrapped: %w", err)) == tc.throttled {
			t.Errorf("%s: wrapped: Throttled = %v", tc.code, !tc.throttled)
		}
	}
	if Throttled(nil) {
		t.Error("nil is throttled")
	}
}
