package region

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/tallyhq/tally/crdt"
)

// TestCountViewNeverTorn: readers loading a counter's published count
// without a lock, while batches publish new durable states (some batches
// failing), always see one whole state: its value, compensated count and
// lastUpdated come from the same publish, and the value never goes back.
// Entries that hold equal states share one, and must still each see only
// their own publishes.
func TestCountViewNeverTorn(t *testing.T) {
	const self = crdt.ReplicaID(1)
	const base = int64(1_700_000_000_000)
	const steps = 3000
	tab := newCounterTable(0)
	tab.self = self
	// a and b take the same changes (their states are shared); c also
	// counts a view of its own every third step.
	a := tab.add(crdt.Key{Video: "a", Event: EventView})
	b := tab.add(crdt.Key{Video: "b", Event: EventView})
	c := tab.add(crdt.Key{Video: "c", Event: EventView})

	// check reports a view that is not one of the states a publish makes:
	// after step i, P = 2i (+ extra), N = i, lastUpdated = base + i.
	check := func(name string, v countView, extraEvery uint64) bool {
		if v == (countView{}) {
			return true // nothing published yet
		}
		i := v.compensated
		want := countView{value: i, compensated: i, lastUpdated: base + int64(i)}
		if extraEvery != 0 {
			want.value += i / extraEvery
		}
		if v != want {
			t.Errorf("%s: torn view %+v, want %+v", name, v, want)
			return false
		}
		return true
	}

	var done atomic.Bool
	var readers sync.WaitGroup
	for range 3 {
		readers.Go(func() {
			var last [3]uint64
			for !done.Load() {
				for j, e := range []*counterEntry{a, b, c} {
					extra := uint64(0)
					if e == c {
						extra = 3
					}
					v := e.view.Load()
					if !check(e.key.Video, v, extra) {
						return
					}
					if v.value < last[j] {
						t.Errorf("%s: value went back from %d to %d", e.key.Video, last[j], v.value)
						return
					}
					last[j] = v.value
					// The lock-free net and a copied state are whole states too.
					if net := e.durableNet(); net < v.value {
						t.Errorf("%s: durable net %d below a value seen before, %d", e.key.Video, net, v.value)
						return
					}
					if st := e.durableState(); st.P.Value() < 2*st.N.Value() {
						t.Errorf("%s: durable state %v is no published state", e.key.Video, st)
						return
					}
				}
			}
		})
	}

	for i := 1; i <= steps; i++ {
		ms := base + int64(i)
		for _, e := range []*counterEntry{a, b, c} {
			n := uint64(2)
			if e == c && i%3 == 0 {
				n++
			}
			tab.increment(e, self, n, ms)
			tab.decrement(e, self, ms)
		}
		_, after, err := tab.prepare(nil)
		if err != nil {
			t.Fatal(err)
		}
		if i%5 == 2 {
			after(errFailedBatch) // published with the next batch instead
		} else {
			after(nil)
		}
	}
	done.Store(true)
	readers.Wait()

	for _, tc := range []struct {
		e     *counterEntry
		value uint64
	}{{a, steps}, {b, steps}, {c, steps + steps/3}} {
		if got := tc.e.view.Load(); got.value != tc.value || got.compensated != steps || got.lastUpdated != base+steps {
			t.Errorf("%s: final view %+v, want value %d, compensated %d at %d", tc.e.key.Video, got, tc.value, steps, base+steps)
		}
	}
	if a.view.state() != b.view.state() {
		t.Errorf("a and b hold equal states %v and %v, not one shared", a.view.state(), b.view.state())
	}
}

// TestStatesCopyOnWrite: an idle counter holds one state, shared by live and
// durable; a change copies it and leaves the durable state (and any entry
// sharing it) as it was until its batch is durable; a covered merge copies
// nothing.
func TestStatesCopyOnWrite(t *testing.T) {
	const self, peer = crdt.ReplicaID(1), crdt.ReplicaID(2)
	tab := newCounterTable(0)
	tab.self = self
	a := tab.add(crdt.Key{Video: "a", Event: EventView})
	b := tab.add(crdt.Key{Video: "b", Event: EventView})
	batch := func(err error) {
		t.Helper()
		_, after, perr := tab.prepare(nil)
		if perr != nil {
			t.Fatal(perr)
		}
		after(err)
	}
	tab.increment(a, self, 1, 10)
	tab.increment(b, self, 1, 10)
	batch(nil)
	shared := a.view.state()
	for _, e := range []*counterEntry{a, b} {
		if e.live != shared || e.view.state() != shared || e.liveOwned {
			t.Fatalf("%s idle: live %p, durable %p, owned %v; want both %p, shared", e.key.Video, e.live, e.view.state(), e.liveOwned, shared)
		}
	}

	tab.increment(a, self, 1, 20)
	if got := tab.liveValue(a); got != 2 {
		t.Fatalf("a live value %d, want 2", got)
	}
	if a.live == shared || shared.Value() != 1 {
		t.Fatalf("a changed the shared state in place: %v", shared)
	}
	if got := a.view.Load().value; got != 1 {
		t.Fatalf("a durable value %d before its batch, want 1", got)
	}
	batch(errFailedBatch)
	if got := a.view.Load().value; got != 1 {
		t.Fatalf("a durable value %d after a failed batch, want 1", got)
	}
	batch(nil)
	if got := a.view.Load(); got.value != 2 || got.lastUpdated != 20 {
		t.Fatalf("a view %+v, want 2 at 20", got)
	}
	if a.live != a.view.state() {
		t.Fatal("a idle again but holds two states")
	}
	if b.view.state() != shared || b.view.Load().value != 1 {
		t.Fatalf("b's durable state changed with a's: %v", b.view.state())
	}

	var remote crdt.PNCounter
	remote.Increment(self, 1, 10) // covered by b
	if tab.merged(b, remote) || b.live != shared {
		t.Fatal("a covered merge changed b or copied its state")
	}
	remote.Increment(peer, 5, 30)
	if !tab.merged(b, remote) || b.live == shared || shared.Value() != 1 {
		t.Fatalf("a merge that adds a slot: live %v, shared %v", b.live, shared)
	}
	batch(nil)
	if got := b.view.Load(); got.value != 6 || got.lastUpdated != 30 {
		t.Fatalf("b view %+v after merge, want 6 at 30", got)
	}
}

// TestIdleVideoHoldsOneState: after a counted view is durable, the video's
// counter and its minute, hour and day buckets share one state, and the
// bucket names are shared with other videos' buckets of the same minute.
func TestIdleVideoHoldsOneState(t *testing.T) {
	clock := newFakeClock(t0)
	n := openNode(t, testConfig(clock))
	ctx := testCtx(t)
	if _, err := n.RecordViews(ctx, []View{{Video: "v1", User: "u1"}, {Video: "v2", User: "u2"}}); err != nil {
		t.Fatal(err)
	}
	nowMs := clock.Now().UnixMilli()
	entries := func(video string) []*counterEntry {
		out := []*counterEntry{n.counters.lookup(crdt.Key{Video: video, Event: EventView})}
		for _, b := range crdt.BucketsOf(video, EventView, nowMs) {
			out = append(out, n.counters.lookup(b.Key()))
		}
		for i, e := range out {
			if e == nil {
				t.Fatalf("%s: entry %d not in memory", video, i)
			}
		}
		return out
	}
	v1, v2 := entries("v1"), entries("v2")
	for i, e := range v1 {
		if e.live != v1[0].view.state() || e.view.state() != v1[0].view.state() {
			t.Errorf("v1 entry %s holds its own state %v", e.key, e.view.state())
		}
		if i > 0 && unsafe.StringData(e.key.Event) != unsafe.StringData(v2[i].key.Event) {
			t.Errorf("bucket name %q held twice", e.key.Event)
		}
	}
	if c, err := n.Views("v1"); err != nil || c.Value != 1 || !c.LastUpdated.Equal(clock.Now().Truncate(time.Millisecond)) {
		t.Fatalf("Views(v1) = %+v, %v", c, err)
	}
}

// TestBucketKeyInterned: bucketKey gives b.Key(), shared and without
// allocating once the name is cached.
func TestBucketKeyInterned(t *testing.T) {
	tab := newCounterTable(0)
	b := crdt.BucketKey{Video: "v", Event: EventView, Res: crdt.Minute, Index: 28_512_345}
	k1 := tab.bucketKey(b)
	if k1 != b.Key() {
		t.Fatalf("bucketKey = %v, want %v", k1, b.Key())
	}
	b.Video = "w"
	k2 := tab.bucketKey(b)
	if k2 != b.Key() || unsafe.StringData(k1.Event) != unsafe.StringData(k2.Event) {
		t.Fatalf("second bucketKey %v not sharing %q", k2, k1.Event)
	}
	if allocs := testing.AllocsPerRun(100, func() { tab.bucketKey(b) }); allocs != 0 {
		t.Errorf("bucketKey of a cached name: %v allocations, want 0", allocs)
	}
	if s := tab.names.intern(string([]byte(k1.Event))); unsafe.StringData(s) != unsafe.StringData(k1.Event) {
		t.Error("intern did not return the cached name")
	}
}

// TestCounterEntrySize guards the size of an entry: a node holds four per
// video, and 80 bytes is a Go size class (one byte more costs 16).
func TestCounterEntrySize(t *testing.T) {
	if got := unsafe.Sizeof(counterEntry{}); got > 80 {
		t.Fatalf("counterEntry is %d bytes, want at most 80", got)
	}
}
