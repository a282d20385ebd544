package worker

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"sync"
	"time"
)

// newest knows, for each kind that is superseded (kinds.Kind.Superseded) and each address, the
// newest event whose email went out (or may have): an older code or link to the same person,
// once its replacement has gone out, is not sent after it (reason superseded). That happens
// when the live reader sends a fresh code during a backfill and the main reader comes to the
// older ones later, or when a backfill meets codes whose newer replacements went out before.
// Only a sent email supersedes: a newer one that is skipped or fails must not leave the person
// without a code. Within one reader, emails to one address go out in the order of their events.
//
// What the running process learned is kept here; what went out is also kept in the store
// (store.LatestSent), so that after a restart an older code does not follow a newer one the
// previous process sent. Keys hold a keyed hash of the address (secret), never the address.
type newest struct {
	secret []byte
	mu     sync.Mutex
	latest map[string]eventMark
}

type eventMark struct {
	id string
	at time.Time
}

// newestCap bounds the map. Past it the map starts over: only the marks of sends whose final
// records are still on their way to disk are not in the store too, and those are few.
const newestCap = 10000

// after reports whether mark a comes after b in the stream: created later, or at the same time
// with a greater id (WorkOS event ids sort by time).
func (a eventMark) after(b eventMark) bool {
	return a.at.After(b.at) || a.at.Equal(b.at) && a.id > b.id
}

// key is the key an event's email is superseded by, or "" when it is not: the kind and a keyed
// hash of the address (store.Delivery.SupersedeKey).
func (n *newest) key(ref eventRef) string {
	if ref.kind == nil || !ref.kind.Superseded || ref.Email == "" {
		return ""
	}
	mac := hmac.New(sha256.New, n.secret)
	mac.Write([]byte(strings.ToLower(ref.Email)))
	return ref.kind.Name + ":" + hex.EncodeToString(mac.Sum(nil)[:16])
}

// sent records that ev's email of supersede key key ("": none) went out, or may have. The store
// learns it from the final record; this covers the time until that record is durable.
func (n *newest) sent(key string, ev *Event) {
	if key == "" {
		return
	}
	m := eventMark{id: ev.ID, at: ev.CreatedAt}
	n.mu.Lock()
	defer n.mu.Unlock()
	if old, ok := n.latest[key]; ok && !m.after(old) {
		return
	}
	if n.latest == nil || len(n.latest) >= newestCap {
		// What is older than the writes in flight is in the store already.
		n.latest = map[string]eventMark{}
	}
	n.latest[key] = m
}

// newer returns the newest event sent of supersede key key, when it is newer than ev: the one
// this process knows of, else the one the store knows of.
func (n *newest) newer(key string, ev *Event, st Store) (string, bool, error) {
	if key == "" {
		return "", false, nil
	}
	this := eventMark{id: ev.ID, at: ev.CreatedAt}
	n.mu.Lock()
	m, ok := n.latest[key]
	n.mu.Unlock()
	if ok && m.after(this) {
		return m.id, true, nil
	}
	id, at, ok, err := st.LatestSent(key)
	if err != nil || !ok || !(eventMark{id: id, at: at}).after(this) {
		return "", false, err
	}
	return id, true, nil
}
