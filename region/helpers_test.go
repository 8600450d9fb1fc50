package region

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/store"
)

// testTimeout bounds every wait: generous so that a slow, shared machine never
// fails a test, yet a deadlock still ends it.
const testTimeout = 30 * time.Second

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// t0 is 01:00 UTC on a day, so that a 24 h dedup window runs 23 more hours.
var t0 = time.Date(2024, 3, 10, 1, 0, 0, 0, time.UTC)

// fakeClock is a settable clock safe for concurrent use.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
func (c *fakeClock) Set(t time.Time)         { c.ns.Store(t.UnixNano()) }

// recorder is an Observer that counts fates and batches.
type recorder struct {
	mu       sync.Mutex
	fates    map[store.Fate]int
	batches  int
	tickets  int
	batchErr error
	// onIngested, if set, is called (outside mu) for every report of
	// ingested events (Ingested), with their fate.
	onIngested func(store.Fate)
	// batchCh, if set, receives every batch's stats while it has room.
	batchCh chan store.BatchStats
}

func (r *recorder) Batch(st store.BatchStats) {
	r.mu.Lock()
	r.batches++
	r.tickets += st.Tickets
	if st.Err != nil {
		r.batchErr = st.Err
	}
	ch := r.batchCh
	r.mu.Unlock()
	if ch != nil {
		select {
		case ch <- st:
		default: // never block the commit goroutine
		}
	}
}

func (r *recorder) Ingested(f store.Fate, n int) {
	r.mu.Lock()
	if r.fates == nil {
		r.fates = map[store.Fate]int{}
	}
	r.fates[f] += n
	hook := r.onIngested
	r.mu.Unlock()
	if hook != nil {
		hook(f)
	}
}

func (r *recorder) fate(f store.Fate) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fates[f]
}

// testConfig is an in-memory config on clock, with rate limits out of the way.
func testConfig(clock *fakeClock) Config {
	cfg := TestConfig()
	cfg.Region = "test"
	cfg.Clock = clock.Now
	cfg.UserRate = 1e6
	cfg.UserBurst = 1 << 20
	cfg.RateLimitKeys = 1 << 10
	return cfg
}

// crashConfig is testConfig on a store of its own that outlives the nodes
// opened on it, with the committer stepped by the test: a node abandoned
// without Close is a crash (only what its batches wrote is left).
func crashConfig(t *testing.T) (*store.Store, *fakeClock, Config) {
	t.Helper()
	st, err := store.Open(store.InMemoryOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clock := newFakeClock(t0)
	cfg := testConfig(clock)
	cfg.Store, cfg.ManualCommit = st, true
	return st, clock, cfg
}

// openNode opens a node closed at the end of the test (Close is idempotent).
func openNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	n, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return n
}

func record(t *testing.T, n *Node, v View) Result {
	t.Helper()
	res, err := n.RecordView(testCtx(t), v)
	if err != nil {
		t.Fatalf("RecordView(%+v): %v", v, err)
	}
	return res
}

func views(t *testing.T, n *Node, video string) Count {
	t.Helper()
	c, err := n.Views(video)
	if err != nil {
		t.Fatalf("Views(%q): %v", video, err)
	}
	return c
}

func contextWithCancel(t *testing.T) (context.Context, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(testCtx(t))
	t.Cleanup(cancel)
	return ctx, cancel
}

// wait receives from ch, failing the test if nothing comes within testTimeout.
func wait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(testTimeout)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// add inserts a new, empty counter for k into a table nothing evicts from.
func (t *counterTable) add(k crdt.Key) *counterEntry {
	e, _ := t.insert(k, crdt.PNCounter{}, 0)
	return e
}

// merged is merge's changed, for tables nothing evicts from.
func (t *counterTable) merged(e *counterEntry, st crdt.PNCounter) bool {
	changed, _ := t.merge(e, st)
	return changed
}

// claimLocal is claimUnqueued with a won claim queued at once, as an ingest
// call queues its claims (queueFresh).
func (t *claimTable) claimLocal(k store.ClaimKey, self crdt.ReplicaID, ingestMs int64, batch uint64) (won bool, synced <-chan struct{}) {
	if won, synced = t.claimUnqueued(k, self, ingestMs, batch); won {
		t.queueFresh([]freshClaim{{key: k, ingestMs: ingestMs}})
	}
	return won, synced
}
