package region

import (
	"errors"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tallyhq/tally/store"
)

func notFound(store.ClaimKey) (store.Claim, bool, error) { return store.Claim{}, false, nil }

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestClaimTableConcurrentOneWinner(t *testing.T) {
	tests := []struct {
		name   string
		start  uint64 // the table's start window
		window uint64 // the claimed window
		// wantLookups: Badger lookups expected (memory is authoritative after start).
		wantLookups int64
	}{
		{"window after start: memory only", 10, 11, 0},
		{"start window: one Badger lookup", 10, 10, 1},
		{"window before start: one Badger lookup", 10, 9, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := newClaimTable(tt.start)
			k := store.ClaimKey{Video: "v", User: "u", Window: tt.window}
			var lookups atomic.Int64
			release := make(chan struct{})
			lookup := func(store.ClaimKey) (store.Claim, bool, error) {
				lookups.Add(1)
				<-release // hold the lookup so that others find it loading
				return store.Claim{}, false, nil
			}
			if tt.wantLookups == 0 {
				close(release)
			}
			const g = 32
			results := make([]claimResult, g)
			var wg, started sync.WaitGroup
			started.Add(g)
			for i := range g {
				wg.Go(func() {
					started.Done()
					r, err := tab.claim(k, store.Claim{Replica: 1, IngestMs: int64(i)}, lookup)
					if err != nil {
						t.Error(err)
					}
					results[i] = r
				})
			}
			started.Wait()
			if tt.wantLookups > 0 {
				close(release)
			}
			wg.Wait()

			winner := -1
			for i, r := range results {
				if r.won {
					if winner >= 0 {
						t.Fatalf("claims %d and %d both won", winner, i)
					}
					winner = i
				}
			}
			if winner < 0 {
				t.Fatal("no claim won")
			}
			var waits []<-chan struct{}
			for i, r := range results {
				if i == winner {
					continue
				}
				if r.old != (store.Claim{Replica: 1, IngestMs: int64(winner)}) {
					t.Errorf("loser %d sees claim %+v, want the winner's", i, r.old)
				}
				if r.synced == nil || isClosed(r.synced) {
					t.Fatalf("loser %d may answer duplicate before the winner's claim is durable", i)
				}
				waits = append(waits, r.synced)
			}
			if got := lookups.Load(); got != tt.wantLookups {
				t.Errorf("%d Badger lookups, want %d", got, tt.wantLookups)
			}

			tab.settle(k)
			for i, ch := range waits {
				if !isClosed(ch) {
					t.Fatalf("waiter %d not released by settle", i)
				}
			}
			tab.settle(k) // idempotent
			r, err := tab.claim(k, store.Claim{Replica: 2}, lookup)
			if err != nil || r.won || r.synced != nil {
				t.Fatalf("claim after settle = %+v, %v; want a durable duplicate", r, err)
			}
			if got := tab.len(); got != 1 {
				t.Errorf("len = %d, want 1", got)
			}
		})
	}
}

func TestClaimTableLookup(t *testing.T) {
	tab := newClaimTable(5)
	k := store.ClaimKey{Video: "v", User: "u", Window: 5}
	stored := store.Claim{Replica: 9, IngestMs: 1234}
	calls := 0
	found := func(got store.ClaimKey) (store.Claim, bool, error) {
		calls++
		if got != k {
			t.Errorf("lookup of %+v, want %+v", got, k)
		}
		return stored, true, nil
	}
	for i := range 3 {
		r, err := tab.claim(k, store.Claim{Replica: 1}, found)
		if err != nil || r.won || r.old != stored || r.synced != nil {
			t.Fatalf("claim %d of a claim in Badger = %+v, %v; want a durable duplicate of %+v", i, r, err, stored)
		}
	}
	if calls != 1 {
		t.Errorf("%d lookups, want 1 (then cached)", calls)
	}

	// A failed lookup fails the claim, records nothing and can be retried.
	k2 := store.ClaimKey{Video: "v", User: "u2", Window: 5}
	boom := errors.New("disk on fire")
	if _, err := tab.claim(k2, store.Claim{}, func(store.ClaimKey) (store.Claim, bool, error) { return store.Claim{}, false, boom }); !errors.Is(err, boom) {
		t.Fatalf("claim with a failing lookup: %v", err)
	}
	r, err := tab.claim(k2, store.Claim{Replica: 1}, notFound)
	if err != nil || !r.won {
		t.Fatalf("retry after a failed lookup = %+v, %v; want won", r, err)
	}
	tab.settle(k2)
	tab.settle(store.ClaimKey{Video: "never", User: "claimed", Window: 5}) // no-op
}

func TestClaimTableDropsOldWindows(t *testing.T) {
	tab := newClaimTable(0)
	id := claimID{"v", "u"}
	k := func(w uint64) store.ClaimKey { return store.ClaimKey{Video: "v", User: "u", Window: w} }
	windows := func() []uint64 {
		s := tab.shard(k(0))
		s.mu.Lock()
		defer s.mu.Unlock()
		return slices.Sorted(maps.Keys(s.windows))
	}
	for w := uint64(5); w <= 8; w++ {
		r, err := tab.claim(k(w), store.Claim{Replica: 1, IngestMs: int64(w)}, notFound)
		if err != nil || !r.won {
			t.Fatalf("claim in window %d: %+v, %v", w, r, err)
		}
		tab.settle(k(w))
		want := []uint64{w}
		if w > 5 {
			want = []uint64{w - 1, w}
		}
		if got := windows(); !slices.Equal(got, want) {
			t.Fatalf("after a claim in window %d, windows %v in memory, want %v", w, got, want)
		}
	}
	// The previous window still answers.
	r, err := tab.claim(k(7), store.Claim{Replica: 2}, notFound)
	if err != nil || r.won || r.old.IngestMs != 7 {
		t.Fatalf("repeat in the previous window: %+v, %v; want a duplicate", r, err)
	}
	if got := tab.len(); got != 2 {
		t.Errorf("len = %d, want 2", got)
	}
	// A window two back is gone from every shard the next window reaches:
	// other (video, user) pairs in the same shard are dropped with it.
	s := tab.shard(k(0))
	s.mu.Lock()
	_, kept := s.windows[6][id]
	s.mu.Unlock()
	if kept {
		t.Error("window 6 kept after a claim in window 8")
	}
}
