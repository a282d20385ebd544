package main

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/workos-emailer/workos-emailer/internal/config"
	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/store/postgres"
	"github.com/workos-emailer/workos-emailer/worker"
)

// The store a configuration names (store.driver): the bbolt file, which one daemon holds locked,
// or the PostgreSQL database, which several daemons share and operators' commands change
// directly.

func sharedStore(cfg *config.Config) bool { return cfg.Store.Driver == config.StorePostgres }

// storeName is how documents name the store (admin.Status.StorePath): the file's absolute path,
// or the database without its password.
func storeName(cfg *config.Config) (string, error) {
	if sharedStore(cfg) {
		return postgres.Describe(cfg.Store.DSN)
	}
	return filepath.Abs(cfg.Store.Path)
}

// openDaemonStore opens the daemon's store; leadership is nil for the bbolt store (its file lock
// is the leadership). created says a new bbolt file was made.
// A database that does not answer yet is waited for (a standby's job is to be there when it
// does), until ctx ends.
func openDaemonStore(ctx context.Context, cfg *config.Config, log *zap.Logger) (st store.Backend, leadership worker.Leadership, created bool, err error) {
	if sharedStore(cfg) {
		for logged := false; ; logged = true {
			pg, err := postgres.Open(ctx, cfg.Store.DSN, postgres.Options{Daemon: true, LeaseTTL: cfg.Store.LeaseTTL, Kinds: kinds.Names()})
			switch {
			case err == nil:
				return pg, worker.LeadershipOf(pg.Acquire), false, nil
			case !errors.Is(err, postgres.ErrUnreachable) || ctx.Err() != nil:
				return nil, nil, false, err
			case !logged:
				log.Warn("cannot reach the PostgreSQL store; waiting for it (nothing is sent meanwhile)", zap.Error(err))
			}
			select {
			case <-ctx.Done():
				return nil, nil, false, ctx.Err()
			case <-time.After(postgres.AcquireInterval):
			}
		}
	}
	_, statErr := os.Stat(cfg.Store.Path)
	bolt, err := store.Open(cfg.Store.Path, store.Options{Kinds: kinds.Names()})
	if err != nil {
		return nil, nil, false, err
	}
	return bolt, nil, errors.Is(statErr, fs.ErrNotExist), nil
}

// openOperatorStore opens the database as an operator's command does: its cursor changes end
// the leader's term, so that the leader polls from the new cursor.
func openOperatorStore(cfg *config.Config) (store.Backend, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Store.LeaseTTL)
	defer cancel()
	return postgres.Open(ctx, cfg.Store.DSN, postgres.Options{LeaseTTL: cfg.Store.LeaseTTL, Kinds: kinds.Names()})
}

// appliedBy names who applies a change made in the store itself rather than through a daemon:
// the next run of the one daemon, or the leading daemon, which notices it within seconds.
func appliedBy(cfg *config.Config) string {
	if sharedStore(cfg) {
		return "the leading daemon (within seconds, once its sends in flight are recorded)"
	}
	return "the next run"
}
