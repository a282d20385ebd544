package worker

import (
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
type newest struct {
	mu     sync.Mutex
	latest map[string]eventMark
}

type eventMark struct {
	id string
	at time.Time
}

// newestCap bounds the map; past it, marks of events older than newestKeep go: a code that old
// has expired, so nothing it could supersede would be sent anyway.
const (
	newestCap  = 10000
	newestKeep = 48 * time.Hour
)

// after reports whether mark a comes after b in the stream: created later, or at the same time
// with a greater id (WorkOS event ids sort by time).
func (a eventMark) after(b eventMark) bool {
	return a.at.After(b.at) || a.at.Equal(b.at) && a.id > b.id
}

// supersedeKey is the key an event's email is superseded by, or "" when it is not.
func supersedeKey(ref eventRef) string {
	if ref.kind == nil || !ref.kind.Superseded || ref.Email == "" {
		return ""
	}
	return ref.kind.Name + "\x00" + strings.ToLower(ref.Email)
}

// sent records that ev's email went out, or may have.
func (n *newest) sent(ev *Event, now time.Time) {
	ref, err := ev.parsed()
	if err != nil {
		return
	}
	key := supersedeKey(ref)
	if key == "" {
		return
	}
	m := eventMark{id: ev.ID, at: ev.CreatedAt}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.latest == nil {
		n.latest = map[string]eventMark{}
	}
	if old, ok := n.latest[key]; ok && !m.after(old) {
		return
	}
	if len(n.latest) >= newestCap {
		for k, old := range n.latest {
			if now.Sub(old.at) > newestKeep {
				delete(n.latest, k)
			}
		}
	}
	n.latest[key] = m
}

// newer returns the newest event sent for ev's address and kind, when it is newer than ev.
func (n *newest) newer(ev *Event, ref eventRef) (string, bool) {
	key := supersedeKey(ref)
	if key == "" {
		return "", false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	m, ok := n.latest[key]
	if !ok || !m.after(eventMark{id: ev.ID, at: ev.CreatedAt}) {
		return "", false
	}
	return m.id, true
}
