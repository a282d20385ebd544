// Package store keeps the daemon's durable state in a bbolt file: the event cursor and one
// delivery record per handled event. It never holds secrets: only IDs, states, timestamps,
// reasons and SES message IDs.
package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// State is where a delivery stands. Sent, Skipped, Dead and Ambiguous are final: the cursor may
// move past an event only once its record is final.
type State string

const (
	// Pending: seen, not yet sent; a transient failure is being retried.
	Pending State = "pending"
	// Sending is written durably right before the SES call. A record found in this state at
	// startup means the process died while SES may have accepted the message.
	Sending   State = "sending"
	Sent      State = "sent"
	Skipped   State = "skipped"
	Dead      State = "dead"
	Ambiguous State = "ambiguous"
)

// Final reports whether no further delivery attempt will be made without an operator.
func (s State) Final() bool {
	switch s {
	case Sent, Skipped, Dead, Ambiguous:
		return true
	}
	return false
}

// Delivery is the record of one event's email.
type Delivery struct {
	EventID   string `json:"event_id"`
	Kind      string `json:"kind"`
	State     State  `json:"state"`
	Attempts  int    `json:"attempts,omitempty"`
	Reason    string `json:"reason,omitempty"`
	MessageID string `json:"message_id,omitempty"`
	// ObjectID is the WorkOS object the event refers to (e.g. invitation_01...), kept so an
	// operator's retry can fetch it again without the event. It is an id, not a secret.
	ObjectID string `json:"object_id,omitempty"`
	// MaybeDuplicate marks a sent email that was sent again after a send whose outcome was
	// unknown (on_ambiguous: resend, or an operator's retry of an ambiguous record): the
	// recipient may have received it twice. On a pending record queued for retry it means the
	// earlier send's outcome is unknown.
	MaybeDuplicate bool `json:"maybe_duplicate,omitempty"`
	// OnceKey, when set, names something at most one delivery may ever send (the welcome
	// email's user): a delivery holds it from its `sending` record on, for good once sent or
	// possibly sent, and lets go of it when it ends without sending. See OnceHolder.
	OnceKey string `json:"once_key,omitempty"`
	// SupersedeKey, when set, names the kind and (by a keyed hash) the address of a code or
	// link a newer one replaces: a record saved sent or ambiguous with it becomes the newest of
	// its key (LatestSent). It is not part of the record on disk.
	SupersedeKey string `json:"-"`
	// Recipient is a keyed hash of the normalized recipient address (RecipientHash), never the
	// address: `trace` finds a person's emails by it. "" on records of older versions.
	Recipient string `json:"recipient,omitempty"`
	// Feedback is what SES reported about the sent email (RecordFeedback); nil: nothing yet.
	Feedback       *Feedback `json:"feedback,omitempty"`
	EventCreatedAt time.Time `json:"event_created_at"`
	FirstSeenAt    time.Time `json:"first_seen_at"`
	UpdatedAt      time.Time `json:"updated_at"`
}

// Position is where polling resumes: after Cursor if set, otherwise from Since (zero: oldest).
type Position struct {
	Cursor      string
	CursorSetAt time.Time
	Since       time.Time
	// Initialized is false for a store that has never recorded a starting point.
	Initialized bool
}

// ErrLocked means another process holds the store file.
var ErrLocked = errors.New("store is locked by another process")

var (
	bucketMeta       = []byte("meta")
	bucketDeliveries = []byte("deliveries")
	// bucketSending holds the records in state Sending (record.go).
	bucketSending = []byte("sending")
	// bucketOnce maps a Delivery.OnceKey to the event id holding it. It is never pruned.
	bucketOnce = []byte("once")

	keyCursor      = []byte("cursor")
	keyCursorSetAt = []byte("cursor_set_at")
	keySince       = []byte("since")
	keyInitialized = []byte("initialized")
	keySchema      = []byte("schema")
)

// schemaVersion is what this build writes; it reads schemas 1 and 2 too (record.go). Schema 3
// added the recipient's keyed hash and SES's feedback to records, and the messages index.
const schemaVersion = "3"

// separateSending reports whether a schema keeps sending records apart (bucketSending): 2 on.
func separateSending(schema string) bool { return schema == "2" || schema == schemaVersion }

// appendFillPercent is how full bbolt leaves a page it splits in the deliveries bucket: nearly
// full, with a little room for a record that grows when its send is recorded.
const appendFillPercent = 0.95

// pageSize is the bbolt page size of a new store (an existing file keeps its own). Records are
// appended to the right edge of the deliveries tree one commit at a time, and bbolt splits a
// leaf that overflows by a record or two into a full page and a page of the last few records:
// with 4 KiB pages (12 records) that leaves pages 10 records full on average, with 16 KiB pages
// (about 55 records) 52.
const pageSize = 16 << 10

// allocSize is how far ahead of its data bbolt grows the file: bbolt's default of 16 MiB would
// be half again the size of a store of 100,000 records.
const allocSize = 4 << 20

// Options tunes Open.
type Options struct {
	// LockTimeout bounds the wait for another process's file lock. Default 2s.
	LockTimeout time.Duration
	// ReadOnly opens with a shared lock and never writes.
	ReadOnly bool
	// Kinds, when set, are the kinds of email a record may have (records of unhandled event
	// types have kind ""); a record of another kind is damage. The daemon passes kinds.Names() (package kinds).
	Kinds []string
}

// Store is a handle on the bbolt file. It is safe for concurrent use.
type Store struct {
	db      *bolt.DB
	path    string
	kinds   []string
	commits *committer // nil when opened read-only
	// derivedStale: a read-only open found the counters or the problem index disagreeing with
	// the records and cannot rebuild them, so Stats and Problems count from the records.
	derivedStale bool
	// addressSecret keys the hashes of addresses in supersede keys (latest.go); nil when a
	// read-only open found none.
	addressSecret []byte
}

// ErrDamaged means the store file exists but cannot be trusted. Starting afresh instead would
// forget which emails went out, so Open refuses and the operator decides.
var ErrDamaged = errors.New("store file is damaged")

const damagedHint = "restore it from a backup; do not delete it: a fresh store forgets which emails went out, " +
	"and a backfill would send them again"

// Open opens or creates the store at path with mode 0600. An existing file is checked page by
// page before use, so damage shows up as a clear error at start instead of a panic mid-send.
func Open(path string, opts Options) (s *Store, err error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 2 * time.Second
	}
	fi, statErr := os.Stat(path)
	exists := statErr == nil
	switch {
	case statErr != nil && !errors.Is(statErr, fs.ErrNotExist):
		return nil, openError(path, statErr)
	case !exists && opts.ReadOnly:
		return nil, fmt.Errorf("open store %s: %w (has the daemon ever run with this store.path?)", path, statErr)
	case exists && fi.IsDir():
		return nil, fmt.Errorf("open store %s: it is a directory; store.path names the file", path)
	case exists && fi.Size() == 0:
		// bbolt would silently initialize an empty file. An empty file is what truncation leaves
		// behind, or a first start killed within its first milliseconds; only a person can tell.
		return nil, fmt.Errorf("open store %s: %w: the file is empty (0 bytes); if this is a new install "+
			"whose first start was interrupted, delete the file; otherwise %s", path, ErrDamaged, damagedHint)
	}
	if !exists && !opts.ReadOnly {
		// A new store only in a directory that exists: a typo in store.path must not start a
		// fresh store, which forgets the cursor and what was sent.
		if fi, err := os.Stat(filepath.Dir(path)); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("open store %s: the directory %s does not exist; create it if this is a new install, "+
				"or correct store.path (a fresh store forgets the cursor and which emails went out)", path, filepath.Dir(path))
		}
	}
	// bbolt panics on some damaged pages (a bad freelist on open, a page that names the wrong id
	// on read) rather than returning an error.
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("open store %s: %w (%v); %s", path, ErrDamaged, r, damagedHint)
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout, ReadOnly: opts.ReadOnly, PageSize: pageSize})
	if err != nil {
		return nil, openError(path, err)
	}
	db.AllocSize = allocSize
	s = &Store{db: db, path: path, kinds: slices.Clone(opts.Kinds)}
	derivedOK := true
	if exists {
		if derivedOK, err = s.verify(); err != nil {
			_ = db.Close()
			return nil, err
		}
	}
	if opts.ReadOnly {
		s.derivedStale = !derivedOK
		if err := s.checkSchema(); err != nil {
			_ = db.Close()
			return nil, err
		}
		// The address hash key, for trace: a store read-only has it unless it was never opened
		// to write.
		_ = db.View(func(tx *bolt.Tx) error {
			if meta := tx.Bucket(bucketMeta); meta != nil {
				if v := meta.Get(keyAddressSecret); len(v) == 32 {
					s.addressSecret = bytes.Clone(v)
				}
			}
			return nil
		})
		return s, nil
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if exists && tx.Bucket(bucketMeta) == nil && hasBuckets(tx) {
			return nil // another program's file: checkSchema names the problem, nothing is written
		}
		for _, b := range [][]byte{bucketMeta, bucketDeliveries, bucketSending, bucketCounts, bucketProblems, bucketRetry, bucketOnce,
			bucketLatest, bucketRequests, bucketIdempotency, bucketMessages} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch string(meta.Get(keySchema)) {
		case "":
			if err := meta.Put(keySchema, []byte(schemaVersion)); err != nil {
				return err
			}
		case "1":
			if err := migrateSchema1(tx); err != nil {
				return fmt.Errorf("move to schema %s: %w", schemaVersion, err)
			}
		case "2":
			// Schema 3 only adds optional fields and an index that fills as emails are sent.
			if err := meta.Put(keySchema, []byte(schemaVersion)); err != nil {
				return err
			}
		case schemaVersion:
		default:
			// A newer build's file (a rollback): write nothing that assumes this schema.
			return s.schemaError(string(meta.Get(keySchema)))
		}
		// A byte flipped in a counter must not mislead status: verify compared them with the
		// records it read anyway.
		if !derivedOK || !derivedCurrent(tx) {
			if err := rebuildDerived(tx); err != nil {
				return fmt.Errorf("rebuild counters and indexes: %w", err)
			}
		}
		secret, err := ensureAddressSecret(meta)
		if err != nil {
			return fmt.Errorf("keep the address hash key: %w", err)
		}
		s.addressSecret = secret
		return stampDerived(tx)
	})
	if err == nil {
		err = s.checkSchema()
	}
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("initialize store %s: %w", path, err)
	}
	s.commits = newCommitter(db)
	return s, nil
}

// hasBuckets tells a file of another program from one whose first start ended before our
// buckets were created: bbolt writes an empty database before the first transaction.
func hasBuckets(tx *bolt.Tx) bool {
	k, _ := tx.Cursor().First()
	return k != nil
}

// openError says what to do about a failure to open the file.
func openError(path string, err error) error {
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return fmt.Errorf("open store %s: %w (is the daemon running? stop it first)", path, ErrLocked)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("open store %s: %w (the daemon's user must be able to read and write the file and its "+
			"directory; under systemd, StateDirectory= provides one)", path, err)
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("open store %s: %w (point store.path at a writable directory)", path, err)
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrChecksum), errors.Is(err, bolterrors.ErrVersionMismatch),
		strings.Contains(err.Error(), "file size too small"):
		return fmt.Errorf("open store %s: %w (%w); %s", path, ErrDamaged, err, damagedHint)
	}
	return fmt.Errorf("open store %s: %w", path, err)
}

// verify reads every key and value once per start, which buys the promise that a damaged store
// stops the daemon before it sends anything. It walks the data rather than running bbolt's
// tx.Check, which also asserts on both meta pages: bbolt keeps two so that one torn by a power
// cut is survivable, and refusing to start then would turn a recoverable file into an outage.
// Every record is checked as its reads check it (decodeDelivery) and where it is kept, and the
// cursor and times of the position must read. derivedOK reports whether the counters, the problem
// index and the retry queue agree with the records, which a read-write open then rebuilds.
func (s *Store) verify() (derivedOK bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) (err error) {
		// A panic must not escape the callback: the transaction would stay open and Close hang.
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		schema := ""
		meta := tx.Bucket(bucketMeta)
		if meta != nil {
			schema = string(meta.Get(keySchema))
		}
		// A newer schema's records may follow rules this build does not know: checkSchema names
		// the problem instead.
		known := schema == "" || schema == "1" || separateSending(schema)
		err = tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if known && (bytes.Equal(name, bucketDeliveries) || bytes.Equal(name, bucketSending)) {
				return nil // read below
			}
			return b.ForEach(func(k, v []byte) error { return nil })
		})
		if err != nil || !known {
			return err
		}
		if meta != nil {
			if err := checkPosition(meta); err != nil {
				return err
			}
		}
		derivedOK, err = checkRecords(tx, schema, rulesNow(s.kinds))
		return err
	})
	if err != nil {
		return false, fmt.Errorf("open store %s: %w (%w); %s", s.path, ErrDamaged, err, damagedHint)
	}
	return derivedOK, nil
}

// checkPosition checks what readPosition reads. The cursor goes to WorkOS as the id to list
// events after; a damaged one would at best be refused there and at worst skip events.
func checkPosition(meta *bolt.Bucket) error {
	if c := meta.Get(keyCursor); len(c) > 0 && !plausibleEventID(c) {
		return fmt.Errorf("the cursor %q is not an event id", clip(c, 80))
	}
	for _, k := range [][]byte{keyCursorSetAt, keySince} {
		if _, err := getTime(meta, k); err != nil {
			return err
		}
	}
	return nil
}

// checkRecords checks every record (a record in the sending bucket must be sending, one in
// deliveries must not, unless schema 1 kept it there) and compares the records with what is
// derived from them, in the same pass.
func checkRecords(tx *bolt.Tx, schema string, r rules) (derivedOK bool, err error) {
	all, sending := tx.Bucket(bucketDeliveries), tx.Bucket(bucketSending)
	if all == nil || sending == nil {
		return false, nil // not (yet) a store: checkSchema or the first start's setup see to it
	}
	var rd recordDecoder
	counts := map[string]map[State]int{}
	count := func(d Delivery) {
		if counts[d.Kind] == nil {
			counts[d.Kind] = map[State]int{}
		}
		counts[d.Kind][d.State]++
	}
	problems := tx.Bucket(bucketProblems)
	derivedOK = problems != nil
	// The problem index and the deliveries bucket are both in key order: walk them side by side.
	var pc *bolt.Cursor
	var pk []byte
	if problems != nil {
		pc = problems.Cursor()
		pk, _ = pc.First()
	}
	err = all.ForEach(func(k, v []byte) error {
		d, err := rd.delivery(k, v, r)
		if err != nil {
			return err
		}
		if d.State == Sending && separateSending(schema) {
			return fmt.Errorf("delivery record %q is sending but not in the sending bucket", clip(k, 80))
		}
		count(d)
		if d.State == Dead || d.State == Ambiguous {
			if pc != nil && bytes.Equal(pk, k) {
				pk, _ = pc.Next()
			} else {
				derivedOK = false
			}
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	if pk != nil {
		derivedOK = false
	}
	err = sending.ForEach(func(k, v []byte) error {
		if len(v) == 0 {
			return nil // schema 1's index entry: the record is in deliveries
		}
		d, err := rd.delivery(k, v, r)
		if err != nil {
			return err
		}
		switch {
		case d.State != Sending:
			return fmt.Errorf("delivery record %q in the sending bucket is %s", clip(k, 80), d.State)
		case separateSending(schema) && all.Get(k) != nil:
			return fmt.Errorf("delivery record %q is in both the sending and the deliveries bucket", clip(k, 80))
		}
		count(d)
		return nil
	})
	if err != nil {
		return false, err
	}
	return derivedOK && countersMatch(tx, counts) && retryQueueMatches(tx, r), nil
}

// countersMatch reports whether bucketCounts holds exactly counts.
func countersMatch(tx *bolt.Tx, counts map[string]map[State]int) bool {
	b := tx.Bucket(bucketCounts)
	if b == nil {
		return false
	}
	want := 0
	for _, states := range counts {
		want += len(states)
	}
	seen, ok := 0, true
	_ = b.ForEach(func(k, v []byte) error {
		kind, state, cut := strings.Cut(string(k), "\x00")
		if !cut || len(v) != 8 || binary.BigEndian.Uint64(v) != uint64(counts[kind][State(state)]) {
			ok = false
		}
		seen++
		return nil
	})
	return ok && seen == want
}

// retryQueueMatches reports whether every queued retry names a record that is not final, as
// rebuildDerived leaves the queue.
func retryQueueMatches(tx *bolt.Tx, r rules) bool {
	b := tx.Bucket(bucketRetry)
	if b == nil {
		return false
	}
	ok := true
	_ = b.ForEach(func(k, _ []byte) error {
		v := getRecord(tx, k)
		if v == nil {
			ok = false
			return nil
		}
		if d, err := decodeDelivery(k, v, r); err != nil || d.State.Final() {
			ok = false
		}
		return nil
	})
	return ok
}

func (s *Store) checkSchema() error {
	return s.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil || tx.Bucket(bucketDeliveries) == nil {
			return fmt.Errorf("store %s is not a workos-emailer store (missing buckets)", s.path)
		}
		if v := string(meta.Get(keySchema)); v != schemaVersion && v != "2" && v != "1" {
			return s.schemaError(v)
		}
		return nil
	})
}

func (s *Store) schemaError(v string) error {
	return fmt.Errorf("store %s has schema %q, this build reads %q, \"2\" and \"1\"; was it written by a newer version?", s.path, v, schemaVersion)
}

// Path is the file the store lives in.
func (s *Store) Path() string { return s.path }

// Close releases the file lock.
func (s *Store) Close() error {
	s.commits.close()
	return s.db.Close()
}

// Position reads where polling resumes.
func (s *Store) Position() (Position, error) {
	var p Position
	err := s.db.View(func(tx *bolt.Tx) (err error) {
		p, err = readPosition(tx.Bucket(bucketMeta))
		return err
	})
	if err != nil {
		return Position{}, fmt.Errorf("read cursor: %w", err)
	}
	return p, nil
}

func readPosition(meta *bolt.Bucket) (Position, error) {
	var p Position
	p.Cursor = string(meta.Get(keyCursor))
	p.Initialized = meta.Get(keyInitialized) != nil
	var err error
	if p.CursorSetAt, err = getTime(meta, keyCursorSetAt); err != nil {
		return Position{}, err
	}
	p.Since, err = getTime(meta, keySince)
	return p, err
}

// InitPosition records the starting point of a store that has none yet (zero since: oldest) and
// returns the position in force. Persisting it means a restart before the first event still
// starts from the same point instead of a later "now".
func (s *Store) InitPosition(since time.Time) (Position, error) {
	err := s.update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta.Get(keyInitialized) != nil {
			return nil
		}
		return setStart(meta, since)
	})
	if err != nil {
		return Position{}, fmt.Errorf("record starting point: %w", err)
	}
	return s.Position()
}

// ResetCursor forgets the cursor: the next run reads events from since (backfill).
func (s *Store) ResetCursor(since time.Time) error {
	err := s.update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		for _, k := range [][]byte{keyCursor, keyCursorSetAt} {
			if err := meta.Delete(k); err != nil {
				return err
			}
		}
		return setStart(meta, since)
	})
	if err != nil {
		return fmt.Errorf("reset cursor: %w", err)
	}
	return nil
}

// SetCursor makes polling resume after eventID.
func (s *Store) SetCursor(eventID string, now time.Time) error {
	return s.SetCursorAsync(eventID, now)()
}

func setStart(meta *bolt.Bucket, since time.Time) error {
	if err := meta.Put(keyInitialized, []byte{1}); err != nil {
		return err
	}
	if since.IsZero() {
		return meta.Delete(keySince)
	}
	return putTime(meta, keySince, since)
}

func putCursor(meta *bolt.Bucket, eventID string, now time.Time) error {
	if !plausibleEventID([]byte(eventID)) { // the next open would refuse it (checkPosition)
		return fmt.Errorf("the cursor %q is not an event id", clip([]byte(eventID), 80))
	}
	if err := meta.Put(keyInitialized, []byte{1}); err != nil {
		return err
	}
	if err := meta.Put(keyCursor, []byte(eventID)); err != nil {
		return err
	}
	return putTime(meta, keyCursorSetAt, now)
}

// Delivery returns the record for eventID, if any.
func (s *Store) Delivery(eventID string) (Delivery, bool, error) {
	var d Delivery
	var found bool
	err := s.db.View(func(tx *bolt.Tx) (err error) {
		v := getRecord(tx, []byte(eventID))
		if v == nil {
			return nil
		}
		found = true
		d, err = decodeDelivery([]byte(eventID), v, rulesNow(s.kinds))
		return err
	})
	if err != nil {
		return Delivery{}, false, fmt.Errorf("read delivery %s: %w", eventID, err)
	}
	return d, found, nil
}

// Save writes d durably (fsync) and, when cursor is not empty, moves the cursor to it in the same
// transaction, so a final record and the cursor that depends on it cannot be torn apart.
func (s *Store) Save(d Delivery, cursor string, now time.Time) error {
	return s.SaveAsync(d, cursor, now)()
}

// putDelivery writes d where its state keeps it (record.go) and keeps what is derived from the
// records in step within the same transaction: the per kind x state counters, the index of dead
// and ambiguous records, and the operator's retry queue, which a final record leaves.
func putDelivery(tx *bolt.Tx, d Delivery) error {
	v, err := encodeDelivery(d)
	if err != nil {
		return err
	}
	key := []byte(d.EventID)
	// What would not read back is not written: the next start would refuse the file as damaged,
	// after the email went out.
	if err := checkDelivery(key, "", d, rulesNow(nil)); err != nil {
		return fmt.Errorf("delivery record %q: %w", clip(key, 80), err)
	}
	all, sending := tx.Bucket(bucketDeliveries), tx.Bucket(bucketSending)
	// Event ids grow with time, so records are appended at the right edge of the tree. bbolt
	// splits pages half full by default, which for appends leaves the file twice its data.
	all.FillPercent = appendFillPercent
	if old := getRecord(tx, key); old != nil {
		h, err := decodeHead(key, old)
		if err != nil {
			return err
		}
		if err := addCount(tx, h.Kind, h.State, -1); err != nil {
			return err
		}
	}
	into, from := all, sending
	if d.State == Sending {
		into, from = sending, all
	}
	if err := into.Put(key, v); err != nil {
		return err
	}
	if err := from.Delete(key); err != nil {
		return err
	}
	if err := addCount(tx, d.Kind, d.State, 1); err != nil {
		return err
	}
	if err := setIndex(tx.Bucket(bucketProblems), key, d.State == Dead || d.State == Ambiguous); err != nil {
		return err
	}
	if err := holdOnce(tx, d); err != nil {
		return err
	}
	if err := markLatest(tx, d); err != nil {
		return err
	}
	if err := indexMessage(tx, d); err != nil {
		return err
	}
	if err := dropRequestContent(tx, d); err != nil {
		return err
	}
	if d.State.Final() {
		return tx.Bucket(bucketRetry).Delete(key)
	}
	return nil
}

// holdOnce takes or releases d's OnceKey: a delivery that sends, or may have sent, holds it
// for good; one that ends without sending lets go of it. Taking a key another event holds is
// the caller's mistake (OnceHolder says), and changes nothing.
func holdOnce(tx *bolt.Tx, d Delivery) error {
	if d.OnceKey == "" {
		return nil
	}
	once, k, id := tx.Bucket(bucketOnce), []byte(d.OnceKey), []byte(d.EventID)
	holder := once.Get(k)
	switch take, release := HoldsOnce(d.State); {
	case take && holder == nil:
		return once.Put(k, id)
	case release && bytes.Equal(holder, id):
		return once.Delete(k)
	}
	return nil
}

// OnceHolder returns the event id holding key, or "" if none does.
func (s *Store) OnceHolder(key string) (string, error) {
	var holder string
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketOnce); b != nil {
			holder = string(b.Get([]byte(key)))
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("read %s: %w", key, err)
	}
	return holder, nil
}

func setIndex(b *bolt.Bucket, key []byte, in bool) error {
	if in {
		return b.Put(key, nil)
	}
	return b.Delete(key)
}

// Interrupted returns the records left in state Sending by a process that stopped mid-send.
func (s *Store) Interrupted() ([]Delivery, error) {
	var out []Delivery
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSending).ForEach(func(k, _ []byte) error {
			d, err := decodeDelivery(k, getRecord(tx, k), rulesNow(s.kinds))
			if err != nil {
				return err
			}
			out = append(out, d)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list interrupted sends: %w", err)
	}
	return out, nil
}

// ForEach calls fn for every delivery record in event-id order.
func (s *Store) ForEach(fn func(Delivery) error) error {
	var rd recordDecoder
	r := rulesNow(s.kinds)
	return s.db.View(func(tx *bolt.Tx) error {
		return forEachRecord(tx, func(k, v []byte) error {
			d, err := rd.delivery(k, v, r)
			if err != nil {
				return err
			}
			return fn(d)
		})
	})
}

func putTime(b *bolt.Bucket, key []byte, t time.Time) error {
	v, err := t.UTC().MarshalText()
	if err != nil {
		return err
	}
	return b.Put(key, v)
}

func getTime(b *bolt.Bucket, key []byte) (time.Time, error) {
	v := b.Get(key)
	if v == nil {
		return time.Time{}, nil
	}
	var t time.Time
	if err := t.UnmarshalText(v); err != nil {
		return time.Time{}, fmt.Errorf("decode %s: %w", key, err)
	}
	return t, nil
}
