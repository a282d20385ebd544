package worker

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
	"github.com/workos-emailer/workos-emailer/internal/fakeworkos"
	"github.com/workos-emailer/workos-emailer/internal/syncbuf"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

const testAPIKey = "sk_test_harness_KEY_4f1c9a"

// harness wires the real pipeline to a fake WorkOS and a fake SES, through the real workos-go
// and aws-sdk-go-v2 clients, with a real bbolt store in a temporary directory.
type harness struct {
	t      *testing.T
	wos    *fakeworkos.Server
	ses    *fakeses.Server
	ses2   *mailer.SES
	store  *store.Store
	dbPath string
	logs   *syncbuf.Buffer
	opts   Options
	wosURL string
	// templates, when set, replace the built-in ones with the brand Acme.
	templates *mailer.Templates
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, wos: fakeworkos.New(testAPIKey), ses: fakeses.New(), logs: &syncbuf.Buffer{}}
	h.wosURL = h.wos.Start()
	t.Cleanup(h.wos.Close)
	sesURL := h.ses.Start()
	t.Cleanup(h.ses.Close)
	var err error
	h.ses2, err = mailer.NewSES(context.Background(), mailer.SESOptions{
		Region: "us-east-1", Endpoint: sesURL, From: "Acme <no-reply@acme.example>",
		ReplyTo: "help@acme.example", ConfigurationSet: "transactional", Timeout: 2 * time.Second,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "secretkeytest", ""),
	})
	if err != nil {
		t.Fatal(err)
	}
	h.dbPath = t.TempDir() + "/state.db"
	h.openStore()
	h.opts = Options{PageSize: 100, PollInterval: 10 * time.Millisecond, RetryBase: time.Millisecond,
		RetryMax: 20 * time.Millisecond, PausedRetry: 20 * time.Millisecond, StopWhenIdle: true}
	return h
}

func (h *harness) openStore() {
	h.t.Helper()
	st, err := store.Open(h.dbPath, store.Options{})
	if err != nil {
		h.t.Fatal(err)
	}
	h.store = st
	h.t.Cleanup(func() { _ = st.Close() })
}

// restart closes and reopens the store, as a process restart would.
func (h *harness) restart() {
	h.t.Helper()
	if err := h.store.Close(); err != nil {
		h.t.Fatal(err)
	}
	h.openStore()
}

func (h *harness) worker() *Worker {
	templates := h.templates
	if templates == nil {
		templates = mustTemplates(h.t, mailer.TemplateOptions{Brand: mailer.Brand{Name: "Acme"}})
	}
	enc := zap.NewProductionEncoderConfig()
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(h.logs), zapcore.DebugLevel))
	return New(h.opts, workosapi.New(testAPIKey, h.wosURL, 2*time.Second, nil), h.store, h.ses2, templates, log)
}

func mustTemplates(t *testing.T, opts mailer.TemplateOptions) *mailer.Templates {
	t.Helper()
	tm, err := mailer.LoadTemplates(opts)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

func fakeworkosInvitation(email, org string) fakeworkos.Invitation {
	return fakeworkos.Invitation{Email: email, ExpiresAt: time.Now().Add(24 * time.Hour), OrganizationID: org}
}

// run runs the worker until the stream is drained.
func (h *harness) run() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.worker().Run(ctx); err != nil {
		h.t.Fatal(err)
	}
}

// runBackground runs a daemon-style worker until the returned stop is called.
func (h *harness) runBackground() (stop func()) {
	h.opts.StopWhenIdle = false
	w := h.worker()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Error(err)
		}
	}
}

func (h *harness) delivery(eventID string) store.Delivery {
	h.t.Helper()
	d, ok, err := h.store.Delivery(eventID)
	if err != nil || !ok {
		h.t.Fatalf("no delivery record for %s (err %v)", eventID, err)
	}
	return d
}

func (h *harness) cursor() string {
	h.t.Helper()
	p, err := h.store.Position()
	if err != nil {
		h.t.Fatal(err)
	}
	return p.Cursor
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) sentTo(addr string) []fakeses.Message {
	var out []fakeses.Message
	for _, m := range h.ses.Messages() {
		if len(m.To) == 1 && m.To[0] == addr {
			out = append(out, m)
		}
	}
	return out
}
