package postgres

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/pgtest"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/store/storetest"
)

// cluster is the throwaway PostgreSQL every test of the package shares (a database each); nil
// when PostgreSQL is not installed (then the tests skip, unless REQUIRE_POSTGRES=1).
var (
	cluster   *pgtest.Cluster
	noCluster error
)

func TestMain(m *testing.M) {
	c, stop, err := pgtest.StartServer()
	if err != nil {
		if os.Getenv("REQUIRE_POSTGRES") == "1" || !errors.Is(err, pgtest.ErrNotInstalled) {
			fmt.Fprintln(os.Stderr, "start PostgreSQL for the tests:", err)
			os.Exit(1)
		}
		noCluster = err
	}
	cluster = c
	code := m.Run()
	if stop != nil {
		stop()
	}
	os.Exit(code)
}

func newDB(t *testing.T) string {
	t.Helper()
	if cluster == nil {
		t.Skip("PostgreSQL store tests:", noCluster)
	}
	return cluster.CreateDB(t)
}

func openStore(t *testing.T, dsn string, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// leading is a daemon's handle that holds a term; Close gives the term up first.
type leading struct {
	*Store
	term *Term
}

func (l leading) Close() error {
	l.term.Release()
	return l.Store.Close()
}

func acquire(t *testing.T, s *Store) *Term {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	term, err := s.Acquire(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	return term
}

// TestContract holds the PostgreSQL store to the contract every backend keeps, as a leading
// daemon's handle.
func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		dsn := newDB(t)
		return func(t *testing.T) store.Backend {
			s, err := Open(context.Background(), dsn, Options{Daemon: true, LeaseTTL: 4 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			return leading{s, acquire(t, s)}
		}
	})
}
