package workosapi

import (
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

// read returns id's cached name, or fetch's answer, cached.
func (c *nameCache) read(id string, fetch func() (Person, error)) (Person, error) {
	if p, ok := c.get(id); ok {
		return p, nil
	}
	v, err, _ := c.inflight.Do(id, func() (any, error) {
		p, err := fetch()
		if err == nil {
			c.put(id, p)
		}
		return p, err
	})
	return v.(Person), err
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
