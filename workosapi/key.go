package workosapi

import (
	"strings"
	"sync/atomic"

	"go.uber.org/zap"
)

// keyHolder holds the API key every request carries and what WorkOS last said of it. The key can change
// while the daemon runs (a reload after rotating it): the transport puts the current one on each
// request, whatever key the SDK clients were built with.
type keyHolder struct {
	key atomic.Pointer[string]
	// rejected: WorkOS's last answer that judged the key refused it.
	rejected atomic.Bool
	log      atomic.Pointer[zap.Logger]
}

func (k *keyHolder) current() string { return *k.key.Load() }

// judged records WorkOS's verdict on key, the key a request carried; a key newly refused is an
// error-level line naming the key, since nothing works until a person replaces it. A verdict on a
// key replaced meanwhile (SetAPIKey) is not about the current one.
func (k *keyHolder) judged(key string, rejected bool, status int) {
	if key != k.current() {
		return
	}
	if k.rejected.Swap(rejected) == rejected || !rejected {
		return
	}
	if log := k.log.Load(); log != nil {
		log.Error("WorkOS rejects the API key: set a valid WORKOS_API_KEY (in the WorkOS dashboard, API Keys) and reload or "+
			"restart; nothing is lost meanwhile", zap.String("key", KeyName(k.current())), zap.Int("status", status))
	}
}

// KeyName names a WorkOS API key for an operator: the variable it comes from and its kind
// (sk_test_ or sk_live_), never more of it.
func KeyName(key string) string {
	for _, prefix := range []string{"sk_test_", "sk_live_"} {
		if strings.HasPrefix(key, prefix) {
			return "WORKOS_API_KEY, " + prefix + "..."
		}
	}
	return "WORKOS_API_KEY"
}

// SetAPIKey makes every request from now on carry key (a rotation); WorkOS's verdict on the old
// key no longer stands.
func (c *Client) SetAPIKey(key string) {
	c.key.key.Store(&key)
	c.key.rejected.Store(false)
}

// SetLogger is where a rejected key is reported.
func (c *Client) SetLogger(log *zap.Logger) { c.key.log.Store(log) }
