package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/admin"
	"github.com/workos-emailer/workos-emailer/internal/fakesqs"
)

// feedbackSamples reads the SES notifications of sesfeedback's testdata, before a test leaves
// the package directory; feedbackFor makes one about an SES message id.
func feedbackSamples(t *testing.T, files ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile("../../sesfeedback/testdata/" + f)
		if err != nil {
			t.Fatal(err)
		}
		out[f] = string(b)
	}
	return out
}

func feedbackFor(samples map[string]string, file, messageID string) string {
	return strings.ReplaceAll(samples[file], "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000", messageID)
}

// Tried as the issue says: after a bounce and a complaint arrive on the queue, status shows the
// rates, trace shows what happened to that person's codes, and the store file holds no address.
func TestSESFeedbackStatusAndTrace(t *testing.T) {
	samples := feedbackSamples(t, "sns-bounce.json", "eventbridge-complaint.json", "sns-delivery.json", "foreign-s3.json")
	daemonEnv(t)
	wos, wosURL, ses, sesURL := fakes(t)
	q := fakesqs.New()
	q.Start()
	t.Cleanup(q.Close) // after the daemon stops (cleanups run last first)
	t.Setenv("WORKOS_EMAILER_MAILER_SES_FEEDBACK_QUEUE_URL", q.QueueURL())
	in := runInstance(t, wosURL, sesURL, "")
	now := time.Now()
	wos.AddCode("magic_auth", "Jane.Doe@Customer.test", "user_01", now.Add(time.Hour))
	wos.AddPasswordReset("jane.doe@customer.test", "user_01", now.Add(time.Hour))
	wos.AddCode("magic_auth", "sam@customer.test", "user_02", now.Add(time.Hour))
	eventually(t, "three emails sent", func() bool { return len(ses.Messages()) == 3 })
	ids := map[string]string{}
	for _, m := range ses.Messages() {
		ids[m.Tags["kind"]+" "+strings.ToLower(m.To[0])] = m.MessageID
	}
	q.Send(feedbackFor(samples, "sns-bounce.json", ids["magic_auth jane.doe@customer.test"]))
	q.Send(feedbackFor(samples, "eventbridge-complaint.json", ids["password_reset jane.doe@customer.test"]))
	q.Send(feedbackFor(samples, "sns-delivery.json", ids["magic_auth sam@customer.test"]))
	q.Send(feedbackFor(samples, "sns-bounce.json", ids["magic_auth jane.doe@customer.test"])) // SQS delivers at least once
	q.Send(feedbackFor(samples, "foreign-s3.json", "x"))
	eventually(t, "the queue drained", func() bool { left, deleted := q.Left(); return left == 0 && deleted == 5 })

	var doc admin.Status
	eventually(t, "status to count the feedback", func() bool {
		doc = in.statusJSON(t)
		f := doc.Feedback.Last24Hours
		return f.Sent == 3 && f.Bounced == 1 && f.Complained == 1 && f.Delivered == 1
	})
	if r := doc.Feedback.Last24Hours.BounceRate; r == nil || *r < 0.33 || *r > 0.34 || len(doc.Feedback.Warnings) == 0 {
		t.Errorf("rates and warnings: %+v", doc.Feedback)
	}
	if doc.Live.SESFeedbackQueue == nil || !doc.Live.SESFeedbackQueue.OK {
		t.Errorf("the queue's state: %+v", doc.Live.SESFeedbackQueue)
	}
	out, _ := mustCLI(t, 0, "status", "--config", in.cfg)
	for _, want := range []string{"SES feedback", "reading the queue", "3: 1 delivered, 1 bounced (33.33%), 1 complained (33.33%)", "WARNING"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	out, _ = mustCLI(t, 0, "trace", "JANE.DOE@customer.test", "--config", in.cfg)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.Contains(lines[2], "password_reset") || !strings.Contains(lines[2], "COMPLAINT") ||
		!strings.Contains(lines[3], "magic_auth") || !strings.Contains(lines[3], "BOUNCED for good") || strings.Contains(out, "sam") {
		t.Errorf("trace, newest first:\n%s", out)
	}
	tr, _ := mustCLI(t, 0, "trace", "sam@customer.test", "--json", "--config", in.cfg)
	if d := decode[admin.Trace](t, tr); d.Count != 1 || d.Deliveries[0].Feedback == nil || d.Deliveries[0].Feedback.DeliveredAt.IsZero() {
		t.Errorf("trace --json: %s", tr)
	}
	if code := in.stop(); code != exitOK {
		t.Fatalf("exit %d:\n%s", code, in.stderr.String())
	}
	// Offline, trace reads the store file; and the file holds no address.
	out, _ = mustCLI(t, 0, "trace", "jane.doe@customer.test", "--config", in.cfg)
	if !strings.Contains(out, "store file") || strings.Count(out, "event_") != 2 {
		t.Errorf("trace from the store file:\n%s", out)
	}
	b, err := os.ReadFile(in.store)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"jane.doe", "sam@", "customer.test", "recipient@example.com"} {
		if bytes.Contains(bytes.ToLower(b), []byte(a)) {
			t.Errorf("the store file holds %q", a)
		}
	}
	if strings.Contains(in.stderr.String(), "jane.doe") || strings.Contains(strings.ToLower(in.stderr.String()), "jane.doe") {
		t.Error("an address reached the log")
	}
}
