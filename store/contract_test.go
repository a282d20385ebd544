package store_test

import (
	"path/filepath"
	"testing"

	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/store/storetest"
)

// TestContract holds the bbolt store to the contract every backend keeps.
func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		path := filepath.Join(t.TempDir(), "state.db")
		return func(t *testing.T) store.Backend {
			st, err := store.Open(path, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
	})
}
