package region

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/tallyhq/tally/crdt"
)

func benchNode(b *testing.B) *Node { return benchNodeBuckets(b, true) }

// BenchmarkRecordView measures one counted view end to end in process
// (validate, rate limit, claim, increment, group commit on in-memory Badger).
func BenchmarkRecordView(b *testing.B) {
	n := benchNode(b)
	ctx := context.Background()
	var seq atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := seq.Add(1)
			if _, err := n.RecordView(ctx, View{Video: "v" + strconv.FormatInt(i%1000, 10), User: "u" + strconv.FormatInt(i, 10)}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRecordViewsBatch measures batch ingest, per view.
func BenchmarkRecordViewsBatch(b *testing.B) {
	n := benchNode(b)
	ctx := context.Background()
	const size = 1000
	views := make([]View, size)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		for j := range views {
			i++
			views[j] = View{Video: "v" + strconv.Itoa(i%1000), User: "u" + strconv.Itoa(i)}
		}
		if _, err := n.RecordViews(ctx, views); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "views/s")
}

// BenchmarkViews measures the read path on a hot key in memory.
func BenchmarkViews(b *testing.B) {
	n := benchNode(b)
	if _, err := n.RecordView(context.Background(), View{Video: "hot", User: "u"}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := n.Views("hot"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkHotKeyIncrement measures raw increments of one counter in memory
// from every core, the floor under every ingest path: this node's own
// increments (lock-free) and a peer replica's (under the entry's lock), with
// a batch cut folding and snapshotting the counter every 10,000 increments.
func BenchmarkHotKeyIncrement(b *testing.B) {
	for _, tc := range []struct {
		name string
		r    crdt.ReplicaID
	}{{"own", 1}, {"locked", 2}} {
		b.Run(tc.name, func(b *testing.B) {
			t := newCounterTable(0)
			t.self = 1
			e := t.add(crdt.Key{Video: "hot", Event: EventView})
			var ops atomic.Int64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					t.increment(e, tc.r, 1, 1)
					if ops.Add(1)%10_000 == 0 {
						_, after, _ := t.prepare(nil)
						after(nil)
					}
				}
			})
			b.StopTimer()
			_, after, _ := t.prepare(nil)
			after(nil)
			if got := e.view.Load().value; got != uint64(ops.Load()) {
				b.Fatalf("counter holds %d after %d increments", got, ops.Load())
			}
			b.ReportMetric(float64(ops.Load())/b.Elapsed().Seconds(), "increments/s")
		})
	}
}
