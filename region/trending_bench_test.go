package region

import (
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tallyhq/tally/crdt"
)

// trendBenchVideos is the number of videos active in every window of
// BenchmarkTrendTop.
const trendBenchVideos = 1_000_000

// trendBench is BenchmarkTrendTop's tracker, built once (a few seconds) and
// shared by its sub-benchmarks and their reruns.
var trendBench struct {
	once          sync.Once
	tr            *trendTracker
	bytesPerVideo float64 // live heap per video, video IDs included
	setup         time.Duration
}

// splitmix64 is a fixed pseudo-random mix, for reproducible counts.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// trendBenchTracker returns a tracker where each of trendBenchVideos videos
// has one minute, one hour and one day bucket (spread over the 1h, 24h and
// 7d windows) with a pseudo-random count up to 100,000.
func trendBenchTracker() *trendTracker {
	trendBench.once.Do(func() {
		start := time.Now()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		tr := newTrendTracker(nil)
		for i := range trendBenchVideos {
			video := "video" + strconv.Itoa(1_000_000+i) // 12 bytes, like real IDs
			n := splitmix64(uint64(i))%100_000 + 1
			for _, w := range DefaultTopWindows {
				b := crdt.BucketKey{Video: video, Event: EventView, Res: w.Res, Index: w.Res.Index(trendT0) - int64(i%w.Buckets)}
				tr.observe(b, n, trendT0)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		trendBench.tr = tr
		trendBench.bytesPerVideo = float64(after.HeapAlloc-before.HeapAlloc) / trendBenchVideos
		trendBench.setup = time.Since(start)
	})
	return trendBench.tr
}

// BenchmarkTrendTop measures top over 1,000,000 videos in the 1h window
// (each also in the 24h and 7d windows): "cold" is a cache miss (one pass
// over every sum with a 10-entry heap), "cached" a hit, with its latency
// percentiles (each measured with two clock reads, ~50 ns, included).
func BenchmarkTrendTop(b *testing.B) {
	tr := trendBenchTracker()
	b.Logf("setup: %d videos in %v, %.0f B/video live heap for the three windows", trendBenchVideos, trendBench.setup.Round(time.Millisecond), trendBench.bytesPerVideo)
	b.Run("cold", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			tr.cacheMu.Lock()
			clear(tr.cache)
			tr.cacheMu.Unlock()
			if _, err := tr.top(EventView, "1h", 10, trendT0); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "cold-ms")
		b.ReportMetric(trendBench.bytesPerVideo, "B/video")
	})
	b.Run("cached", func(b *testing.B) {
		if _, err := tr.top(EventView, "1h", 10, trendT0); err != nil {
			b.Fatal(err)
		}
		lat := make([]time.Duration, 0, 1<<20)
		b.ReportAllocs()
		for b.Loop() {
			t0 := time.Now()
			if _, err := tr.top(EventView, "1h", 10, trendT0); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
		b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
	})
}

// BenchmarkTrendObserve measures one observation: 100,000 videos, each view
// updating its minute, hour and day buckets in turn, the clock moving 1 ms
// per 100 observations (so windows slide and buckets drop, amortized).
func BenchmarkTrendObserve(b *testing.B) {
	const videos = 100_000
	ids := make([]string, videos)
	for i := range ids {
		ids[i] = "video" + strconv.Itoa(1_000_000+i)
	}
	run := func(tr *trendTracker, i int64) {
		now := trendT0 + i/100
		res := crdt.Resolutions[i%3]
		v := i / 3
		b := crdt.BucketKey{Video: ids[v%videos], Event: EventView, Res: res, Index: res.Index(now)}
		tr.observe(b, uint64(v/videos+1), now)
	}
	b.Run("serial", func(b *testing.B) {
		tr := newTrendTracker(nil)
		b.ReportAllocs()
		var i int64
		for b.Loop() {
			run(tr, i)
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		tr := newTrendTracker(nil)
		var seq atomic.Int64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				run(tr, seq.Add(1))
			}
		})
	})
}
