package main

import (
	"context"
	"strings"
	"testing"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
)

// The sender is checked with SES at start: one SES would refuse every email from stops the
// daemon with what to do; a sandboxed account starts, says so, and status shows it.
func TestSESSenderCheckedAtStart(t *testing.T) {
	daemonEnv(t)
	_, wosURL, ses, sesURL := fakes(t)
	ses.SetIdentity("no-reply@acme.test", fakeses.IdentityMissing)
	ses.SetIdentity("acme.test", fakeses.IdentityPending)
	code, _, stderr := cli(t, context.Background(), "run", "--config", daemonConfig(t, wosURL, sesURL, ""))
	if code != exitFailure || !strings.Contains(stderr, "mailer.from no-reply@acme.test is not a verified SES sender") ||
		!strings.Contains(stderr, "pending verification") || !strings.Contains(stderr, "verify it in the SES console") {
		t.Fatalf("exit %d, want 1 naming the unverified sender:\n%s", code, stderr)
	}
	if strings.Contains(stderr, "workos-emailer started") {
		t.Error("the daemon started with a sender SES refuses")
	}

	ses.SetIdentity("acme.test", fakeses.IdentityVerified)
	ses.SetSandbox(true)
	in := runInstance(t, wosURL, sesURL, "")
	if !strings.Contains(in.stderr.String(), "the SES account is in the sandbox") {
		t.Errorf("no sandbox warning at start:\n%s", in.stderr.String())
	}
	eventually(t, "status to show the sandbox", func() bool {
		out, _ := mustCLI(t, 0, "status", "--config", in.cfg)
		return strings.Contains(out, "SANDBOX: only verified recipients receive mail")
	})
}
