package workosapi

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/workos-emailer/workos-emailer/internal/fakeworkos"
)

// A rejected key is one error line naming WORKOS_API_KEY and its kind, never the key; a rotated
// key (SetAPIKey) is carried by every SDK client's next request, and ends the rejection.
func TestAPIKeyRejectedAndRotated(t *testing.T) {
	const good, old = "sk_live_new_SECRET_2b9f", "sk_live_old_SECRET_77aa"
	f := fakeworkos.New(good)
	base := f.Start()
	defer f.Close()
	core, logs := observer.New(zapcore.DebugLevel)
	c := New(old, base, time.Second, nil)
	c.SetLogger(zap.New(core))
	ctx := context.Background()
	for range 3 {
		if _, err := c.ListEvents(ctx, ListRequest{Limit: 1}); err == nil {
			t.Fatal("the old key was accepted")
		}
	}
	if !c.KeyRejected() {
		t.Fatal("KeyRejected is false after 401s")
	}
	entries := logs.FilterMessageSnippet("WorkOS rejects the API key").All()
	if len(entries) != 1 || entries[0].Level != zapcore.ErrorLevel || entries[0].ContextMap()["key"] != "WORKOS_API_KEY, sk_live_..." {
		t.Fatalf("rejection logged %d times: %+v; want once, at error, naming the key's kind", len(entries), entries)
	}
	for _, e := range logs.All() {
		if strings.Contains(e.Message+strings.Join(mapValues(e.ContextMap()), " "), "SECRET") {
			t.Errorf("a log line shows the key: %+v", e)
		}
	}

	c.SetAPIKey(good)
	if _, err := c.ListEvents(ctx, ListRequest{Limit: 1}); err != nil {
		t.Fatalf("list events with the new key: %v", err)
	}
	if _, err := c.CreateMagicLink(ctx, "ada@example.com", "", ""); err != nil {
		t.Fatalf("another SDK client with the new key: %v", err)
	}
	if c.KeyRejected() {
		t.Error("still rejected after the rotation")
	}
}

func mapValues(m map[string]any) []string {
	var out []string
	for _, v := range m {
		if s, ok := v.(string); ok {
			out = append(out, s)
		}
	}
	return out
}
