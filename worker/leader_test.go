package worker

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/workos-emailer/workos-emailer/internal/pgtest"
	"github.com/workos-emailer/workos-emailer/internal/syncbuf"
	"github.com/workos-emailer/workos-emailer/internal/tcpproxy"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/store/postgres"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

// TestTermsOnPostgres runs two workers on one PostgreSQL store, the first through a proxy: when
// it is partitioned, it stops sending and the second takes over; when the partition heals, the
// first stands by; every email goes out once.
func TestTermsOnPostgres(t *testing.T) {
	h := newHarness(t)
	h.opts.StopWhenIdle = false
	cluster := pgtest.Start(t)
	dsn := cluster.CreateDB(t)
	u, _ := url.Parse(dsn)
	proxy, err := tcpproxy.Listen(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	viaProxy := *u
	viaProxy.Host = proxy.Addr()
	ttl := 2 * time.Second
	type node struct {
		w    *Worker
		st   *postgres.Store
		logs *syncbuf.Buffer
		stop func()
	}
	start := func(name, dsn string) *node {
		st, err := postgres.Open(context.Background(), dsn, postgres.Options{Daemon: true, LeaseTTL: ttl, Holder: name})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		opts := h.opts
		opts.Leadership = LeadershipOf(st.Acquire)
		logs := &syncbuf.Buffer{}
		log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(logs), zapcore.DebugLevel))
		w := New(opts, workosapi.New(testAPIKey, h.wosURL, 2*time.Second, nil), st, h.ses2,
			mustTemplates(t, mailer.TemplateOptions{Brand: mailer.Brand{Name: "Acme"}}), log)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		n := &node{w: w, st: st, logs: logs}
		n.stop = func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
		return n
	}
	a := start("a", viaProxy.String())
	defer func() { a.stop() }()
	eventually(t, "a leads", func() bool { return a.w.Role() == RoleLeader })
	b := start("b", dsn)
	defer func() { b.stop() }()
	eventually(t, "b stands by", func() bool { return b.w.Role() == RoleStandby })

	codes := map[string]bool{}
	add := func(n int) {
		for range n {
			_, _, code := h.wos.AddCode("magic_auth", fmt.Sprintf("u%d@example.com", len(codes)), "user_01", time.Now().Add(time.Hour))
			codes[code] = true
		}
	}
	add(5)
	eventually(t, "a sends the first emails", func() bool { return len(h.ses.Messages()) == 5 })

	proxy.Blackhole() // a is cut off from the database
	eventually(t, "b takes over", func() bool { return b.w.Role() == RoleLeader })
	if a.w.mayStartSend() {
		t.Error("the partitioned worker may still start sends after another took over")
	}
	add(5)
	eventually(t, "b sends the new emails", func() bool { return len(h.ses.Messages()) == 10 })
	proxy.Cut()
	proxy.Restore()
	eventually(t, "a stands by", func() bool { return a.w.Role() == RoleStandby })

	seen := map[string]int{}
	for _, m := range h.ses.Messages() {
		for code := range codes {
			if strings.Contains(m.Text, code) {
				seen[code]++
			}
		}
	}
	for code := range codes {
		if seen[code] != 1 {
			t.Errorf("code %s sent %d times", code, seen[code])
		}
	}
	if !strings.Contains(b.logs.String(), "leading: took the lease") || !strings.Contains(a.logs.String(), "stopped leading") {
		t.Errorf("leadership not logged:\na: %s\nb: %s", a.logs.String(), b.logs.String())
	}
}
