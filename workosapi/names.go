package workosapi

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// nameTTL bounds how long a renamed organization or user may still show its old name.
const nameTTL = time.Minute

// nameCacheSize bounds the cache; when full it starts over, which costs a few reads again.
const nameCacheSize = 1024

// nameCache holds names by WorkOS id (organization and user ids never collide: their prefixes
// differ) for ttl. Only answers are cached, never failures. Concurrent misses of one id share
// one read.
type nameCache struct {
	ttl      time.Duration
	now      func() time.Time
	inflight singleflight.Group

	mu      sync.Mutex
	entries map[string]cachedName
}

// read returns id's cached name, or fetch's answer, cached. The shared read runs detached from
// the cancellation of the caller that started it, so that caller stopping (the live reader
// ending) does not fail the others waiting on it; each caller still stops waiting when its own
// ctx ends.
func (c *nameCache) read(ctx context.Context, id string, fetch func(context.Context) (Person, error)) (Person, error) {
	if p, ok := c.get(id); ok {
		return p, nil
	}
	shared := c.inflight.DoChan(id, func() (any, error) {
		p, err := fetch(context.WithoutCancel(ctx))
		if err == nil {
			c.put(id, p)
		}
		return p, err
	})
	select {
	case r := <-shared:
		return r.Val.(Person), r.Err
	case <-ctx.Done():
		return Person{}, &APIError{Err: fmt.Errorf("WorkOS read of %s: stopped waiting: %w", id, ctx.Err())}
	}
}

type cachedName struct {
	p  Person
	at time.Time
}

func newNameCache(ttl time.Duration, now func() time.Time) *nameCache {
	return &nameCache{ttl: ttl, now: now, entries: map[string]cachedName{}}
}

func (c *nameCache) get(id string) (Person, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[id]
	if !ok || c.now().Sub(e.at) >= c.ttl {
		return Person{}, false
	}
	return e.p, true
}

func (c *nameCache) put(id string, p Person) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= nameCacheSize {
		clear(c.entries)
	}
	c.entries[id] = cachedName{p: p, at: c.now()}
}
