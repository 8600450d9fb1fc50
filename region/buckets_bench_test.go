package region

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tallyhq/tally/crdt"
)

// benchNodeBuckets is benchNode with time buckets on or off: the two arms of
// the windowed write path's cost.
func benchNodeBuckets(b *testing.B, buckets bool) *Node {
	b.Helper()
	cfg := TestConfig()
	cfg.UserRate, cfg.UserBurst = 1e12, 1<<30
	cfg.DisableTimeBuckets = !buckets
	n, err := Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { n.Close() })
	return n
}

// BenchmarkWindowedWrite compares one counted view with time buckets (the
// minute, hour and day buckets incremented in the same batch) against the
// plain counter, in process with group commit on in-memory Badger:
//
//	go test -run=NONE -bench=WindowedWrite -benchmem ./region/
func BenchmarkWindowedWrite(b *testing.B) {
	for _, arm := range []struct {
		name    string
		buckets bool
	}{{"plain", false}, {"buckets", true}} {
		b.Run("single/"+arm.name, func(b *testing.B) {
			n := benchNodeBuckets(b, arm.buckets)
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
		})
		for _, shape := range []struct {
			name   string
			videos int
		}{{"spread", 1000}, {"hot", 10}} {
			b.Run("batch1000-"+shape.name+"/"+arm.name, func(b *testing.B) {
				batchBench(b, benchNodeBuckets(b, arm.buckets), shape.videos)
			})
		}
	}
}

// batchBench ingests batches of 1,000 views of distinct users over videos
// videos and reports views/s.
func batchBench(b *testing.B, n *Node, videos int) {
	ctx := context.Background()
	const size = 1000
	views := make([]View, size)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		for j := range views {
			i++
			views[j] = View{Video: "v" + strconv.Itoa(i%videos), User: "u" + strconv.Itoa(i)}
		}
		if _, err := n.RecordViews(ctx, views); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "views/s")
}

// BenchmarkHotVideoBucketMemory measures the memory of one hot video's time
// buckets, 7 days of minute buckets (10,080), 168 hour buckets and 7 day
// buckets, each holding the slots of 3 replicas (one per region), on a
// replicating node (the replication engine tracks every key too). The
// buckets are merged in as replicated states and written by group commit,
// so every structure a real node keeps for them is counted.
//
//	go test -run=NONE -bench=HotVideoBucketMemory -benchtime=1x ./region/
func BenchmarkHotVideoBucketMemory(b *testing.B) {
	for b.Loop() {
		start := time.Date(2024, 3, 4, 0, 0, 0, 0, time.UTC)
		clock := newFakeClock(start.Add(7*24*time.Hour - time.Minute))
		cfg := TestConfig()
		cfg.Clock = clock.Now
		n, err := Open(cfg)
		if err != nil {
			b.Fatal(err)
		}
		if err := n.EnableReplication(ReplicationConfig{Self: "bench", Transport: busTransport{newBus()}}); err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		seen := map[crdt.Key]bool{}
		for m := range 7 * 24 * 60 {
			ms := start.Add(time.Duration(m) * time.Minute).UnixMilli()
			for _, bk := range crdt.BucketsOf("hot", EventView, ms) {
				k := bk.Key()
				if seen[k] {
					continue
				}
				seen[k] = true
				var st crdt.PNCounter
				for r := range 3 {
					st.Increment(crdt.ReplicaID(r+1), 60, ms)
				}
				e, err := n.entry(k)
				if err != nil {
					b.Fatal(err)
				}
				n.counters.merged(e, st)
			}
			if m%1000 == 999 {
				if err := n.committer.Flush(ctx); err != nil {
					b.Fatal(err)
				}
			}
		}
		if err := n.committer.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		keys := len(seen)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/1e6, "MB/video")
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(keys), "B/bucket")
		b.ReportMetric(float64(keys), "buckets")
		b.ReportMetric(float64(n.ClusterStatus().Engine.Keys), "engine-keys")
		n.Close()
	}
}
