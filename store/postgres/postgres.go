// Package postgres keeps the daemon's state in PostgreSQL, for several daemons on several hosts
// of which one leads at a time (store.driver: postgres). It is the store.Backend the bbolt store
// is, plus a lease (lease.go): the leader holds a row with a growing epoch, and every write it
// makes is fenced by that epoch, so a leader that was frozen, partitioned or replaced can never
// commit after another took over. The design and the argument are in docs/DESIGN.md (High
// availability).
package postgres

import (
	"context"
	"crypto/rand"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/workos-emailer/workos-emailer/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// DefaultLeaseTTL is store.lease_ttl's default: a standby takes over about this long after the
// leader stopped renewing.
const DefaultLeaseTTL = 10 * time.Second

// MinLeaseTTL bounds store.lease_ttl below: the lease is renewed every fifth of it, and a write
// may take up to half of it.
const MinLeaseTTL = 2 * time.Second

// DefaultName is the installation's name in the database: its lease and its position.
const DefaultName = "default"

// Options tune Open.
type Options struct {
	// LeaseTTL is store.lease_ttl (default DefaultLeaseTTL). Every statement and every open
	// transaction of a connection is cut off after half of it, so that a leader cut off in the
	// middle of a write cannot hold the row a takeover needs for longer.
	LeaseTTL time.Duration
	// Name names the lease and position rows (default DefaultName). One database holds one
	// installation: the other tables are not keyed by it.
	Name string
	// Kinds, when set, are the kinds a record may have (as store.Options.Kinds).
	Kinds []string
	// Daemon: this handle belongs to a daemon, whose writes are a leader's: each needs a term
	// (Acquire) and is fenced by its epoch, and without one it fails with store.ErrFenced.
	// Without Daemon it is an operator's: `cursor set` and `cursor reset` end the leader's term
	// (the epoch moves on in the same transaction), and other writes are row-locked changes
	// the leader's claims tolerate.
	Daemon bool
	// Holder names this daemon in the lease row (default host:pid:random).
	Holder string
}

// Store is a handle on the PostgreSQL store. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
	// leasePool has a connection of its own for the lease, so renewals never queue behind the
	// deliveries' reads and writes.
	leasePool *pgxpool.Pool
	where     string
	opts      Options
	// opTimeout bounds one call (half the lease TTL, as the server's own timeouts).
	opTimeout time.Duration
	secret    []byte
	// epoch is the term this daemon's writes are fenced by; 0: none.
	epoch atomic.Int64
	// generation is the position's generation the pipeline's term started from (InitPosition);
	// changed hears that an operator moved it on since.
	generation atomic.Int64
	changed    chan struct{}
	commits    *committer
}

var _ store.Backend = (*Store)(nil)

// Open connects to the database at dsn, applies the embedded migrations (under an advisory
// lock, so that several daemons starting at once apply each once) and returns the store.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	if opts.LeaseTTL == 0 {
		opts.LeaseTTL = DefaultLeaseTTL
	}
	if opts.LeaseTTL < MinLeaseTTL {
		return nil, fmt.Errorf("store.lease_ttl %s is too short: at least %s", opts.LeaseTTL, MinLeaseTTL)
	}
	if opts.Name == "" {
		opts.Name = DefaultName
	}
	if opts.Holder == "" {
		opts.Holder = defaultHolder()
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx's message may quote the DSN, password included.
		return nil, errors.New("store.dsn is not a PostgreSQL connection string (postgres://user:password@host:5432/db or key=value pairs); " +
			"its text is not shown, as it may hold the password")
	}
	s := &Store{where: describe(cfg.ConnConfig), opts: opts, opTimeout: opts.LeaseTTL / 2, changed: make(chan struct{}, 1)}
	configure(cfg, opts.LeaseTTL)
	cfg.MaxConns = 8
	leaseCfg := cfg.Copy()
	leaseCfg.MaxConns = 1
	if s.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return nil, s.connError(err)
	}
	if s.leasePool, err = pgxpool.NewWithConfig(ctx, leaseCfg); err != nil {
		s.pool.Close()
		return nil, s.connError(err)
	}
	if err := s.migrate(ctx); err != nil {
		s.pool.Close()
		s.leasePool.Close()
		if transient(err) && !errors.Is(err, ErrUnreachable) {
			err = s.connError(err)
		}
		return nil, err
	}
	s.commits = newCommitter(s)
	return s, nil
}

// configure makes every connection give up as the lease requires. A leader cut off from the
// network in the middle of a transaction keeps its row locks until the server notices: with
// idle_in_transaction_session_timeout the server rolls it back after half the TTL, so a
// standby's takeover waits at most that long (measured: docs/DESIGN.md).
func configure(cfg *pgxpool.Config, ttl time.Duration) {
	half := strconv.FormatInt((ttl / 2).Milliseconds(), 10)
	cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = half
	cfg.ConnConfig.RuntimeParams["statement_timeout"] = half
	cfg.ConnConfig.RuntimeParams["application_name"] = "workos-emailer"
	if cfg.ConnConfig.ConnectTimeout == 0 || cfg.ConnConfig.ConnectTimeout > ttl/2 {
		cfg.ConnConfig.ConnectTimeout = ttl / 2
	}
	dialer := &net.Dialer{Timeout: cfg.ConnConfig.ConnectTimeout, KeepAlive: ttl / 2}
	cfg.ConnConfig.DialFunc = dialer.DialContext
	cfg.HealthCheckPeriod = ttl / 2
}

func defaultHolder() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s:%d:%x", host, os.Getpid(), b)
}

// describe names the database without its password: postgres://user@host:port/db.
func describe(c *pgx.ConnConfig) string {
	return fmt.Sprintf("postgres://%s@%s/%s", c.User, net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port))), c.Database)
}

// ErrUnreachable means the database did not answer (refused, reset, timed out, shutting down):
// a daemon waits for it, as it does for the lease.
var ErrUnreachable = errors.New("cannot reach the PostgreSQL store")

func (s *Store) connError(err error) error {
	if transient(err) {
		return fmt.Errorf("%w %s: %w (check store.dsn and that the server is up and reachable)", ErrUnreachable, s.where, err)
	}
	return fmt.Errorf("connect to the PostgreSQL store %s: %w (check store.dsn and the user's password)", s.where, err)
}

// Path names the database, without the password.
func (s *Store) Path() string { return s.where }

// Close waits for queued writes and disconnects.
func (s *Store) Close() error {
	s.commits.close()
	s.pool.Close()
	s.leasePool.Close()
	return nil
}

// ctx bounds one call.
func (s *Store) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.opTimeout)
}

// schemaLock is the advisory lock migrations run under (a transaction lock: released by the
// commit, and by the server if the connection dies).
const schemaLock = 0x776f726b6f73 // "workos"

func (s *Store) migrate(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 4*s.opTimeout)
	defer cancel()
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	slices.Sort(names)
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return s.connError(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(schemaLock)); err != nil {
		return fmt.Errorf("lock the PostgreSQL store %s for its migrations: %w", s.where, err)
	}
	if _, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS workos_emailer_schema (version integer NOT NULL)"); err != nil {
		if transient(err) {
			return s.connError(err)
		}
		return fmt.Errorf("prepare the PostgreSQL store %s: %w (the user needs CREATE on the database's schema)", s.where, err)
	}
	var version int
	err = tx.QueryRow(ctx, "SELECT version FROM workos_emailer_schema").Scan(&version)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if _, err := tx.Exec(ctx, "INSERT INTO workos_emailer_schema VALUES (0)"); err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("read the schema version of the PostgreSQL store %s: %w", s.where, err)
	}
	if version > len(names) {
		return fmt.Errorf("the PostgreSQL store %s has schema %d, this build knows up to %d: it was written by a newer version; "+
			"run that version (or newer)", s.where, version, len(names))
	}
	for _, name := range names[version:] {
		sql, err := migrations.ReadFile(name)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, string(sql)); err != nil {
			return fmt.Errorf("migrate the PostgreSQL store %s (%s): %w", s.where, name, err)
		}
	}
	if _, err := tx.Exec(ctx, "UPDATE workos_emailer_schema SET version = $1", len(names)); err != nil {
		return err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "INSERT INTO leader (name, holder, epoch, expires_at) VALUES ($1, '', 0, '-infinity') ON CONFLICT DO NOTHING", s.opts.Name); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "INSERT INTO position (name, address_secret) VALUES ($1, $2) ON CONFLICT DO NOTHING", s.opts.Name, secret); err != nil {
		return err
	}
	if err := tx.QueryRow(ctx, "SELECT address_secret FROM position WHERE name = $1", s.opts.Name).Scan(&s.secret); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("migrate the PostgreSQL store %s: %w", s.where, err)
	}
	return nil
}

// fenceSQL begins every write of a leader: it fails to find the row once the epoch moved on,
// and its share lock makes a takeover wait for this transaction to end.
// When the epoch moved on it divides by zero: the server aborts the transaction there, so the
// statements pipelined behind the fence never run, whatever the client does next.
const fenceSQL = "SELECT 1 / count(*)::int FROM (SELECT 1 FROM leader WHERE name = $1 AND epoch = $2 FOR SHARE) AS fence"

// write runs fn in one transaction, fenced when this is a daemon's handle (write of a leader).
func (s *Store) write(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return s.fenced(ctx, s.epoch.Load(), func(tx pgx.Tx, first *pgx.Batch) error {
		if err := sendBatch(ctx, tx, first); err != nil {
			return err
		}
		return fn(tx)
	})
}

// fenced begins a transaction and hands fn the first batch to send in it, which holds the
// fence when this is a daemon's handle: fn must send it before anything else, and may queue
// its own statements behind it (one round trip for the fence and the writes).
func (s *Store) fenced(ctx context.Context, epoch int64, fn func(tx pgx.Tx, first *pgx.Batch) error) error {
	if s.opts.Daemon && epoch == 0 {
		return store.ErrFenced
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	first := &pgx.Batch{}
	if s.opts.Daemon {
		queueFence(first, s.opts.Name, epoch)
	}
	if err := fn(tx, first); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "22012" && strings.Contains(pgErr.Where+pgErr.Message, "division") {
			return store.ErrFenced // fenceSQL's division by zero: the epoch moved on
		}
		return err
	}
	return tx.Commit(ctx)
}

func sendBatch(ctx context.Context, tx pgx.Tx, b *pgx.Batch) error {
	if b.Len() == 0 {
		return nil
	}
	return tx.SendBatch(ctx, b).Close()
}

// queueFence queues fenceSQL: the batch fails with store.ErrFenced once the epoch moved on.
func queueFence(b *pgx.Batch, name string, epoch int64) {
	b.Queue(fenceSQL, name, epoch)
}

// unfenced runs fn in one transaction that is not a leader's: row locks guard it.
func (s *Store) unfenced(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, fn)
}

// transient reports whether err is the database or the network failing (retry later), not a
// refusal of what was asked.
func transient(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "57") || pgErr.Code == "40001" || pgErr.Code == "40P01"
	}
	if errors.Is(err, store.ErrFenced) || errors.Is(err, ErrClaimed) || errors.Is(err, errClosed) {
		return false
	}
	var netErr interface{ Timeout() bool }
	return errors.As(err, &netErr) || errors.Is(err, context.DeadlineExceeded) || pgconn.SafeToRetry(err) ||
		strings.Contains(err.Error(), "conn closed") || strings.Contains(err.Error(), "connection reset") ||
		strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "broken pipe") ||
		strings.Contains(err.Error(), "EOF")
}

// Describe names the database a DSN connects to, without its password (as Path does).
func Describe(dsn string) (string, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return "", errors.New("not a PostgreSQL connection string (postgres://user:password@host:5432/db, or key=value pairs); " +
			"its text is not shown, as it may hold the password")
	}
	return describe(cfg), nil
}
