package region

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/replication"
	"github.com/tallyhq/tally/store"
)

// BenchmarkClaimMemory reports what one claim costs a replicating node:
// heap-B/claim for its claim set in the claim table, engine-B/claim for its
// key in the replication engine (digest bucket, key index, change log), and
// disk-B/claim for the key and value Badger stores (before Badger's own
// per-entry overhead and compression). 200,000 distinct views of 1,000 videos,
// IDs of 11-13 bytes.
func BenchmarkClaimMemory(b *testing.B) {
	const claims = 200_000
	keys := make([]store.ClaimKey, claims)
	for i := range keys {
		keys[i] = store.ClaimKey{Video: fmt.Sprintf("video-%06d", i%1000), User: fmt.Sprintf("user-%08d", i), Window: 19792}
	}
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	for range b.N {
		base := heap()
		tab := newClaimTable(24*time.Hour.Milliseconds(), 10*time.Minute.Milliseconds())
		for i, k := range keys {
			tab.claimLocal(k, 7, 1_710_000_000_000+int64(i), 0)
		}
		tab.queue.keys, tab.fresh.keys = nil, nil
		tableBytes := heap() - base

		base = heap()
		eng, err := replication.New(replication.Config{Self: "a", Epoch: 1}, replication.SourceFunc(func(k crdt.Key) crdt.PNCounter {
			return crdt.NewClaims(7, 1_710_000_000_000).State()
		}))
		if err != nil {
			b.Fatal(err)
		}
		for _, k := range keys {
			eng.Load(k.Key())
		}
		engineBytes := heap() - base

		m, err := store.ClaimMutation(keys[0], crdt.NewClaims(7, 1_710_000_000_000), time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(tableBytes)/claims, "heap-B/claim")
		b.ReportMetric(float64(engineBytes)/claims, "engine-B/claim")
		b.ReportMetric(float64(len(m.Key)+len(m.Value)), "disk-B/claim")
		runtime.KeepAlive(tab)
		runtime.KeepAlive(eng)
	}
}
