package region

import (
	"context"
	"flag"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"
)

// videoMemProfile names the file BenchmarkVideoMemory writes a heap profile
// to while the node is still open (-memprofile writes one only after the
// benchmark closed it, when its memory is gone).
var videoMemProfile = flag.String("videomemprofile", "", "write BenchmarkVideoMemory's heap profile, taken with the node open, to `file`")

// BenchmarkVideoMemory measures the heap a durable node holds per distinct
// video, the shape of "tally bench scale": 200,000 videos with one view each
// by distinct users, ingested in RecordViews batches of 1,000 on a node with
// its data on disk. The heap is measured after a GC, with the node still
// open, so everything the node keeps for those videos is counted (counters
// and their time buckets, claims, unique-viewer sketches, trending windows,
// Badger's memtables): heap-B/video; and again once the node is closed,
// which leaves its tables without Badger's memory: tables-B/video.
//
//	go test -run=NONE -bench=VideoMemory -benchtime=1x ./region/
//	go test -c -o /tmp/region.test ./region/
//	/tmp/region.test -test.run=NONE -test.bench=VideoMemory -test.benchtime=1x -videomemprofile=/tmp/mem.out
//	go tool pprof -sample_index=inuse_space -top /tmp/region.test /tmp/mem.out
func BenchmarkVideoMemory(b *testing.B) {
	const videos, size = 200_000, 1000
	for b.Loop() {
		cfg := TestConfig()
		cfg.InMemory = false
		cfg.DataDir = b.TempDir()
		cfg.UserRate, cfg.UserBurst = 1e12, 1<<30
		n, err := Open(cfg)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		views := make([]View, size)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for i := 0; i < videos; i += size {
			for j := range views {
				views[j] = View{Video: "sv" + strconv.Itoa(i+j), User: "su" + strconv.Itoa(i+j)}
			}
			res, err := n.RecordViews(ctx, views)
			if err != nil {
				b.Fatal(err)
			}
			for _, r := range res {
				if !r.Counted {
					b.Fatalf("view not counted: %+v", r)
				}
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/videos, "heap-B/video")
		b.ReportMetric(float64(n.Stats().Counters)/videos, "counters/video")
		if *videoMemProfile != "" {
			f, err := os.Create(*videoMemProfile)
			if err != nil {
				b.Fatal(err)
			}
			if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
				b.Fatal(err)
			}
			if err := f.Close(); err != nil {
				b.Fatal(err)
			}
		}
		// Closed, the node still holds its tables but Badger's memtables and
		// caches are gone: what is left is the node's own cost per video,
		// without Badger's, which is bounded and varies with its flushes
		// and compactions.
		if err := n.Close(); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/videos, "tables-B/video")
		runtime.KeepAlive(n)
	}
}
