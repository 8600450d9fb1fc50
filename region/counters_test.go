package region

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tallyhq/tally/crdt"
)

var errFailedBatch = errors.New("batch failed")

// TestHotKeyLockFree: this node's increments of one key from many
// goroutines, lock-free, interleaved with batch cuts (some failing), a
// peer's merges and live reads, lose nothing and count nothing twice: the
// last batch holds every increment in this node's slot, at the newest time,
// next to the peer's slot.
func TestHotKeyLockFree(t *testing.T) {
	const self, peer = crdt.ReplicaID(1), crdt.ReplicaID(2)
	tab := newCounterTable(0)
	tab.self = self
	e := tab.add(crdt.Key{Video: "hot", Event: EventView})
	const writers, each = 8, 5000
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				tab.increment(e, self, 1, int64(1000+i*writers+w))
			}
		})
	}
	stop := make(chan struct{})
	var cuts, failed atomic.Int64
	var bg sync.WaitGroup
	bg.Go(func() {
		var peerState crdt.PNCounter
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_, after, _ := tab.prepare(nil)
			var err error
			if i%7 == 3 {
				err = errFailedBatch
				failed.Add(1)
			}
			after(err)
			cuts.Add(1)
			peerState.Increment(peer, 1, int64(i))
			tab.merged(e, peerState.Clone())
			if v := tab.liveValue(e); v > writers*each+uint64(i)+1 {
				t.Errorf("live value %d above every increment made", v)
			}
		}
	})
	wg.Wait()
	close(stop)
	bg.Wait()
	_, after, _ := tab.prepare(nil)
	after(nil)
	if e.pending.Load() != 0 || e.flags.Load()&flagDirty != 0 {
		t.Fatalf("after the last batch: pending %d, dirty %v", e.pending.Load(), e.flags.Load()&flagDirty != 0)
	}
	st := e.durableState()
	if got := st.P.Get(self); got.Count != writers*each || got.Updated != int64(1000+each*writers-1) {
		t.Fatalf("own slot %+v, want %d increments at %d", got, writers*each, 1000+each*writers-1)
	}
	if got := st.P.Get(peer).Count; got != uint64(cuts.Load()) {
		t.Fatalf("peer slot %d, want %d", got, cuts.Load())
	}
	if failed.Load() == 0 {
		t.Log("no failed batch ran")
	}
}
