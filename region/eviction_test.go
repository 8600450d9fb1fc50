package region

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/tallyhq/tally/crdt"
)

// TestCounterEvictionKeepsCounts: a node whose counter cache holds far fewer
// counters than it touches evicts them all the time (totals and time
// buckets, the counter log checkpointing every few records), and every
// count, every bucket of every series and every count after a restart is
// exact.
func TestCounterEvictionKeepsCounts(t *testing.T) {
	clock := newFakeClock(t0)
	cfg := testConfig(clock)
	cfg.InMemory, cfg.DataDir = false, t.TempDir()
	cfg.CounterCache, cfg.CounterLogEpoch = 50, 4
	n := openNode(t, cfg)
	ctx := testCtx(t)

	const videos, rounds = 200, 40
	held := 0
	rng := rand.New(rand.NewPCG(1, 2))
	want := map[string]int64{}
	perMinute := map[string]map[int64]int64{} // video → minute start (unix ms) → views
	for r := range rounds {
		views := make([]View, 0, 60)
		for i := range 60 {
			v := fmt.Sprintf("v%d", rng.IntN(videos))
			views = append(views, View{Video: v, User: fmt.Sprintf("u%d-%d", r, i)})
		}
		res, err := n.RecordViews(ctx, views)
		if err != nil {
			t.Fatalf("round %d: %v", r, err)
		}
		minute := clock.Now().Truncate(time.Minute).UnixMilli()
		for i, v := range views {
			if !res[i].Counted {
				t.Fatalf("round %d: view %d not counted: %+v", r, i, res[i])
			}
			want[v.Video]++
			if perMinute[v.Video] == nil {
				perMinute[v.Video] = map[int64]int64{}
			}
			perMinute[v.Video][minute]++
		}
		// Read a few: reads load evicted counters back, and keep them.
		for range 10 {
			v := fmt.Sprintf("v%d", rng.IntN(videos))
			if c, err := n.Views(v); err != nil || int64(c.Value) != want[v] {
				t.Fatalf("round %d: %s counts %d (%v), want %d", r, v, c.Value, err, want[v])
			}
		}
		clock.Advance(20 * time.Second) // a new minute bucket every few rounds
		held = max(held, n.Stats().Counters)
	}
	// The counters touched: per video a total, its minute buckets, and one
	// hour and one day bucket (the run spans 14 minutes of one hour).
	touched := 0
	for _, m := range perMinute {
		touched += 3 + len(m)
	}
	t.Logf("%d counters touched, at most %d held (cache 50), %d evicted", touched, held, n.CountersEvicted())
	if held*4 > touched {
		t.Errorf("the node held up to %d of the %d counters it touched, with a cache of 50", held, touched)
	}
	if n.CountersEvicted() == 0 {
		t.Fatal("no counter was evicted: the test does not test eviction")
	}
	check := func(n *Node, when string) {
		t.Helper()
		for i := range videos {
			v := fmt.Sprintf("v%d", i)
			c, err := n.Views(v)
			if err != nil || int64(c.Value) != want[v] {
				t.Fatalf("%s: %s counts %d (%v), want %d", when, v, c.Value, err, want[v])
			}
			s, err := n.Series(v, EventView, t0, clock.Now(), crdt.Minute)
			if err != nil {
				t.Fatalf("%s: series of %s: %v", when, v, err)
			}
			for _, p := range s.Points {
				if got, w := p.Count, perMinute[v][p.Start.UnixMilli()]; got != w {
					t.Fatalf("%s: %s's minute %s counts %d, want %d", when, v, p.Start, got, w)
				}
			}
		}
	}
	check(n, "after ingest")
	t.Logf("%d counters in memory (cache 50), %d evicted", n.Stats().Counters, n.CountersEvicted())
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n = openNode(t, cfg)
	check(n, "after a restart")
}

// TestCounterTableEvictedEntry: a state read from Badger before an entry of
// its shard was evicted is not inserted (it may be older than the evicted
// entry was: load reads it again), and a merge into an evicted entry is
// refused so that its caller resolves the key again.
func TestCounterTableEvictedEntry(t *testing.T) {
	tab := newCounterTable(1)
	k := crdt.Key{Video: "a", Event: EventView}
	// Both keys' generations before the eviction (tables start at 0).
	_, before := tab.find(k)
	if _, other := tab.find(crdt.Key{Video: "b", Event: EventView}); other != before {
		t.Fatalf("fresh shards at generations %d and %d", before, other)
	}
	a := tab.add(k)
	b := tab.add(crdt.Key{Video: "b", Event: EventView})
	for range 3 { // the first sweep clears the used flags, the next evicts
		tab.evict()
	}
	if tab.len() != 1 || tab.evicted.Load() != 1 {
		t.Fatalf("%d entries left, %d evicted; want 1 and 1", tab.len(), tab.evicted.Load())
	}
	evicted, kept := a, b
	if tab.lookup(k) != nil {
		evicted, kept = b, a
	}
	if !evicted.isEvicted() || kept.isEvicted() || tab.lookup(evicted.key) != nil {
		t.Fatal("the entry that left the table is not the one flagged evicted")
	}
	if _, ok := tab.merge(evicted, crdt.PNCounter{}); ok {
		t.Fatal("merge into an evicted entry was accepted")
	}
	var stale crdt.PNCounter
	stale.Increment(1, 1, 1)
	if _, ok := tab.insert(evicted.key, stale, before); ok {
		t.Fatal("a state read before the eviction was inserted")
	}
	reads := 0
	got, err := tab.load(evicted.key, func() (crdt.PNCounter, bool, error) {
		reads++
		return stale, true, nil
	})
	if err != nil || got == nil || got == evicted || reads != 1 {
		t.Fatalf("load after the eviction: %p (evicted %p), %d reads, %v; want a new entry from one read", got, evicted, reads, err)
	}
}

// TestEvictionConcurrentIngest runs ingest, reads and peer merges at once on
// a node whose cache is far too small, under the race detector: entries are
// evicted between their resolving and their use, and every count still
// comes out exact.
func TestEvictionConcurrentIngest(t *testing.T) {
	clock := newFakeClock(t0)
	cfg := testConfig(clock)
	cfg.CounterCache, cfg.CounterLogEpoch = 16, 2
	n := openNode(t, cfg)
	ctx := testCtx(t)

	const videos, writers, calls, perCall = 40, 3, 40, 15
	const peer, peerViews = crdt.ReplicaID(999), 50
	var mu sync.Mutex
	want := map[string]uint64{}
	var wg sync.WaitGroup
	errs := make(chan error, writers+2)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for c := range calls {
				views := make([]View, perCall)
				for i := range views {
					views[i] = View{Video: fmt.Sprintf("v%d", rng.IntN(videos)), User: fmt.Sprintf("w%d-%d-%d", w, c, i)}
				}
				res, err := n.RecordViews(ctx, views)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				for i, v := range views {
					if res[i].Counted {
						want[v.Video]++
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Add(2)
	go func() { // a peer's counts of the first ten videos arrive, one by one
		defer wg.Done()
		for i := 1; i <= peerViews; i++ {
			for v := range 10 {
				var st crdt.PNCounter
				st.Increment(peer, uint64(i), t0.UnixMilli())
				if _, _, err := n.mergeCounter(crdt.Key{Video: fmt.Sprintf("v%d", v), Event: EventView}, st); err != nil {
					errs <- err
					return
				}
			}
		}
	}()
	go func() { // readers load evicted counters back
		defer wg.Done()
		rng := rand.New(rand.NewPCG(9, 9))
		for range 2000 {
			if _, err := n.Views(fmt.Sprintf("v%d", rng.IntN(videos))); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := n.committer.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n.CountersEvicted() == 0 {
		t.Fatal("no counter was evicted: the test does not test eviction")
	}
	for i := range videos {
		v := fmt.Sprintf("v%d", i)
		w := want[v]
		if i < 10 {
			w += peerViews
		}
		if c, err := n.Views(v); err != nil || c.Value != w {
			t.Errorf("%s counts %d (%v), want %d", v, c.Value, err, w)
		}
	}
}

// TestEvictedBuckets: the filter answers "may have been evicted" for every
// bucket that was, across indexes moving forward and back (clock jumps), and
// "no" for most that were not.
func TestEvictedBuckets(t *testing.T) {
	f := newEvictedBuckets(1000)
	bucket := func(v int, res crdt.Resolution, idx int64) crdt.BucketKey {
		return crdt.BucketKey{Video: fmt.Sprintf("v%d", v), Event: EventView, Res: res, Index: idx}
	}
	var evicted []crdt.BucketKey
	for i := range 1000 {
		idx := int64(100 + i/300) // minutes 100..103, in order
		if i%97 == 0 {
			idx = 90 // a late one: an older minute
		}
		b := bucket(i, crdt.Minute, idx)
		f.add(b)
		evicted = append(evicted, b)
	}
	for _, b := range evicted {
		if !f.mayHold(b) {
			t.Fatalf("%+v was evicted, and the filter says it was not", b)
		}
	}
	for _, idx := range []int64{50, 90, 102} {
		if !f.mayHold(bucket(5000, crdt.Minute, idx)) {
			t.Errorf("minute %d is at or below an index whose filter was dropped: want may-hold", idx)
		}
	}
	if f.mayHold(bucket(5000, crdt.Minute, 104)) || f.mayHold(bucket(5000, crdt.Hour, 103)) {
		t.Error("a newer index, or another resolution, with no eviction: want not held")
	}
	falsePos := 0
	for v := 10_000; v < 20_000; v++ {
		if f.mayHold(bucket(v, crdt.Minute, 103)) {
			falsePos++
		}
	}
	if falsePos > 500 {
		t.Errorf("%d of 10,000 buckets never evicted look evicted: want few", falsePos)
	}
}

// TestCounterQueueDropsExpired: counters that expire leave the eviction
// queue too, also while the table is under its capacity and never sweeps
// it (a node that runs for months keeps no place per expired bucket).
func TestCounterQueueDropsExpired(t *testing.T) {
	tab := newCounterTable(100)
	for i := range 50 {
		tab.add(crdt.Key{Video: fmt.Sprintf("v%d", i), Event: EventView})
	}
	if n := tab.remove(func(k crdt.Key) bool { return k.Video < "v3" }); n == 0 {
		t.Fatal("nothing expired")
	}
	if got, want := len(tab.queue.q)-tab.queue.head, tab.len(); got != want {
		t.Fatalf("the queue holds %d entries, the table %d", got, want)
	}
	for _, e := range tab.queue.q[tab.queue.head:] {
		if e.isEvicted() || tab.lookup(e.key) != e {
			t.Fatalf("the queue holds %s, which left the table", e.key)
		}
	}
}

// TestColdReadsEvict: reads alone, on a node whose cache is full, have
// batches cut to evict: the counters they load do not pile up.
func TestColdReadsEvict(t *testing.T) {
	clock := newFakeClock(t0)
	cfg := testConfig(clock)
	cfg.CounterCache, cfg.CounterLogEpoch, cfg.DisableTimeBuckets = 64, 2, true
	n := openNode(t, cfg)
	ctx := testCtx(t)
	const videos = 1200
	views := make([]View, 0, videos)
	for i := range videos {
		views = append(views, View{Video: fmt.Sprintf("v%d", i), User: "u"})
	}
	for i := 0; i < videos; i += 100 {
		if _, err := n.RecordViews(ctx, views[i:i+100]); err != nil {
			t.Fatal(err)
		}
	}
	evicted := n.CountersEvicted()
	for round := range 3 {
		for i := range videos {
			if c, err := n.Views(fmt.Sprintf("v%d", i)); err != nil || c.Value != 1 {
				t.Fatalf("round %d: v%d counts %d (%v), want 1", round, i, c.Value, err)
			}
		}
	}
	// The batches the reads asked for are cut on the committer's
	// goroutine: wait (generously) for them to have evicted.
	for n.CountersEvicted() == evicted || n.Stats().Counters >= videos/2 {
		select {
		case <-ctx.Done():
			t.Fatalf("after 3,600 cold reads with a cache of 64: %d counters held, %d evicted by the reads",
				n.Stats().Counters, n.CountersEvicted()-evicted)
		case <-time.After(time.Millisecond):
		}
	}
}

// TestCounterCacheBoundsLoggedCounters: a counter the counter log holds
// cannot be evicted until its epoch is checkpointed, so a small cache
// shortens the epochs: a node ingesting new videos holds about its cache's
// worth of counters, not every counter of the log's (default, 16,384
// record) epochs.
func TestCounterCacheBoundsLoggedCounters(t *testing.T) {
	clock := newFakeClock(t0)
	cfg := testConfig(clock)
	cfg.CounterCache = 400
	n := openNode(t, cfg)
	ctx := testCtx(t)
	const videos, batch = 3000, 100
	held := 0
	for i := 0; i < videos; i += batch {
		views := make([]View, 0, batch)
		for j := i; j < i+batch; j++ {
			views = append(views, View{Video: fmt.Sprintf("v%d", j), User: "u"})
		}
		if _, err := n.RecordViews(ctx, views); err != nil {
			t.Fatal(err)
		}
		held = max(held, n.Stats().Counters)
	}
	// 12,000 counters touched (a total and three buckets per video); the
	// log's epochs alone would hold them all.
	if held > 2000 {
		t.Errorf("held up to %d counters with a cache of 400", held)
	}
	for i := range videos {
		if c, err := n.Views(fmt.Sprintf("v%d", i)); err != nil || c.Value != 1 {
			t.Fatalf("v%d counts %d (%v), want 1", i, c.Value, err)
		}
	}
}
