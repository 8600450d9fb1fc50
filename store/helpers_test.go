package store

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// testTimeout bounds every wait in these tests: generous, so that a slow,
// shared machine never fails them, yet a deadlock still ends the test.
const testTimeout = 30 * time.Second

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// openStore opens a store on dir (in memory if dir is empty) and closes it at
// the end of the test unless the returned close function was called first.
func openStore(t *testing.T, dir string) (*Store, func()) {
	t.Helper()
	o := DefaultOptions(dir)
	if dir == "" {
		o = InMemoryOptions()
	}
	s, err := Open(o)
	if err != nil {
		t.Fatalf("Open(%q): %v", dir, err)
	}
	var once sync.Once
	closeFn := func() {
		once.Do(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	t.Cleanup(closeFn)
	return s, closeFn
}

// memStore is an in-memory store closed at the end of the test.
func memStore(t *testing.T) *Store {
	t.Helper()
	s, _ := openStore(t, "")
	return s
}

// write commits muts durably through a short-lived committer.
func write(t *testing.T, s *Store, muts ...Mutation) {
	t.Helper()
	c := NewCommitter(s, CommitterConfig{})
	tk, err := c.Submit(muts...)
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	if err := tk.Wait(testCtx(t)); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("committer Close: %v", err)
	}
}

// get reads a raw key.
func (s *Store) get(key []byte) ([]byte, bool, error) {
	var v []byte
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	return v, err == nil, err
}
