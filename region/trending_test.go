package region

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tallyhq/tally/crdt"
)

// trendT0 is 12:00:30 UTC on a day: half a minute into a minute bucket.
var trendT0 = time.Date(2024, 3, 10, 12, 0, 30, 0, time.UTC).UnixMilli()

// trendStep is one step of a trend scenario: an observation of bucket
// (video, res, index of trendT0 + rel) = value at trendT0+at, or, when window
// is set, a top query at trendT0+at expecting want ("a=3 b=1"; "" is none).
type trendStep struct {
	at     time.Duration
	video  string
	res    crdt.Resolution
	rel    int64
	value  uint64
	event  string // EventView if empty
	window string
	k      int
	want   string
	len    int // when ≥ 0 with a query: the expected len() after it; -1 skips
}

func obsStep(at time.Duration, video string, res crdt.Resolution, rel int64, value uint64) trendStep {
	return trendStep{at: at, video: video, res: res, rel: rel, value: value}
}

func topStep(at time.Duration, window string, k int, want string) trendStep {
	return trendStep{at: at, window: window, k: k, want: want, len: -1}
}

func topLenStep(at time.Duration, window string, k int, want string, n int) trendStep {
	return trendStep{at: at, window: window, k: k, want: want, len: n}
}

// formatTop renders a top list as "a=3 b=1".
func formatTop(vs []VideoCount) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = v.Video + "=" + strconv.FormatUint(v.Count, 10)
	}
	return strings.Join(parts, " ")
}

func TestTrendScenarios(t *testing.T) {
	m, h, d := crdt.Minute, crdt.Hour, crdt.Day
	min, sec := time.Minute, time.Second
	tests := []struct {
		name  string
		steps []trendStep
	}{{
		name: "sums follow observations",
		steps: []trendStep{
			obsStep(0, "a", m, 0, 5),
			obsStep(0, "b", m, 0, 3),
			obsStep(0, "a", m, -10, 2),
			topLenStep(0, "1h", 10, "a=7 b=3", 3),
			obsStep(sec, "a", m, 0, 9), // latest value replaces, not adds
			obsStep(sec, "b", m, -59, 1),
			topStep(2*sec, "1h", 10, "a=11 b=4"),
		},
	}, {
		name: "decrements, to zero",
		steps: []trendStep{
			obsStep(0, "a", m, 0, 5),
			obsStep(0, "b", m, 0, 4),
			obsStep(0, "a", m, 0, 3), // an unlike or a compensation
			topStep(0, "1h", 10, "b=4 a=3"),
			obsStep(2*sec, "a", m, 0, 0),
			topLenStep(2*sec, "1h", 10, "b=4", 1),
			obsStep(4*sec, "b", m, 0, 0),
			topLenStep(4*sec, "1h", 10, "", 0),
		},
	}, {
		name: "a bucket slides out of the 1h window",
		steps: []trendStep{
			obsStep(0, "a", m, 0, 5),
			obsStep(0, "b", m, -30, 4),
			topStep(29*min, "1h", 10, "a=5 b=4"),
			topStep(30*min, "1h", 10, "a=5"), // b's bucket is now 60 minutes old
			topStep(59*min, "1h", 10, "a=5"),
			topLenStep(60*min, "1h", 10, "", 0),
		},
	}, {
		name: "observations after time moved",
		steps: []trendStep{
			obsStep(0, "a", m, 0, 5),
			obsStep(10*min, "a", m, 0, 6),  // a late merge into a bucket still in the window
			obsStep(10*min, "a", m, 10, 1), // the current bucket
			topStep(10*min, "1h", 10, "a=7"),
			obsStep(70*min, "a", m, 10, 9), // older than every window (minute 10 of 11-70): ignored
			obsStep(70*min, "b", m, 11, 9),
			topLenStep(70*min, "1h", 10, "b=9", 1),
		},
	}, {
		name: "older than every window is ignored",
		steps: []trendStep{
			obsStep(0, "a", m, -60, 5),
			obsStep(0, "b", h, -24, 5),
			obsStep(0, "c", d, -7, 5),
			obsStep(0, "d", m, -59, 1),
			topLenStep(0, "1h", 10, "d=1", 1),
			topStep(0, "24h", 10, ""),
			topStep(0, "7d", 10, ""),
		},
	}, {
		name: "future buckets count once time reaches them",
		steps: []trendStep{
			obsStep(0, "a", m, 3, 5), // a peer's clock 3 minutes ahead
			obsStep(0, "b", m, 0, 1),
			topLenStep(0, "1h", 10, "b=1", 2),
			obsStep(sec, "a", m, 3, 6),
			topStep(2*min, "1h", 10, "b=1"),
			topStep(3*min, "1h", 10, "a=6 b=1"),
			obsStep(3*min, "a", m, 3, 7),
			topStep(3*min+2*sec, "1h", 10, "a=7 b=1"),
			topStep(60*min, "1h", 10, "a=7"),
			topStep(63*min, "1h", 10, ""),
		},
	}, {
		name: "a jump of days resets",
		steps: []trendStep{
			obsStep(0, "a", m, 0, 5),
			obsStep(0, "a", h, 0, 5),
			obsStep(0, "a", d, 0, 5),
			obsStep(0, "b", m, 2, 7), // future, must not survive the jump either
			topStep(0, "7d", 10, "a=5"),
			topStep(3*24*time.Hour, "1h", 10, ""),
			topStep(3*24*time.Hour, "24h", 10, ""),
			topLenStep(3*24*time.Hour, "7d", 10, "a=5", 1),
			obsStep(3*24*time.Hour, "c", m, 3*24*60, 2),
			obsStep(3*24*time.Hour, "c", m, 3*24*60-1, 1),
			topStep(3*24*time.Hour+2*sec, "1h", 10, "c=3"),
			topStep(8*24*time.Hour, "7d", 10, ""),
		},
	}, {
		name: "time going backwards is clamped",
		steps: []trendStep{
			obsStep(0, "a", m, 0, 5),
			topStep(61*min, "1h", 10, ""),
			topStep(min, "1h", 10, ""), // the tracker stays at its latest time,
			obsStep(0, "b", m, 0, 5),   // so this bucket is too old
			obsStep(0, "c", m, 30, 5),  // and this one is not in the future
			topStep(61*min+2*sec, "1h", 10, "c=5"),
		},
	}, {
		name: "ties by video ID, k truncates",
		steps: []trendStep{
			obsStep(0, "c", m, 0, 2),
			obsStep(0, "a", m, 0, 2),
			obsStep(0, "b", m, 0, 2),
			obsStep(0, "z", m, 0, 3),
			obsStep(0, "y", m, 0, 1),
			topStep(0, "1h", 10, "z=3 a=2 b=2 c=2 y=1"),
			topStep(0, "1h", 3, "z=3 a=2 b=2"),
			topStep(2*sec, "1h", 2, "z=3 a=2"),
			topStep(2*sec, "1h", 1, "z=3"),
		},
	}, {
		name: "hour and day windows",
		steps: []trendStep{
			obsStep(0, "a", h, 0, 5),
			obsStep(0, "a", h, -23, 1),
			obsStep(0, "b", h, -1, 4),
			obsStep(0, "b", d, -6, 9),
			obsStep(0, "a", d, 0, 1),
			topStep(0, "24h", 10, "a=6 b=4"),
			topStep(0, "7d", 10, "b=9 a=1"),
			topStep(time.Hour, "24h", 10, "a=5 b=4"),
			topStep(24*time.Hour, "7d", 10, "a=1"),
		},
	}, {
		name: "events are separate",
		steps: []trendStep{
			obsStep(0, "a", m, 0, 5),
			{video: "b", event: "like", res: m, value: 9},
			topStep(0, "1h", 10, "a=5"),
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTrendTracker(nil)
			for i, s := range tc.steps {
				now := trendT0 + s.at.Milliseconds()
				if s.window == "" {
					event := cmp.Or(s.event, EventView)
					b := crdt.BucketKey{Video: s.video, Event: event, Res: s.res, Index: s.res.Index(trendT0) + s.rel}
					tr.observe(b, s.value, now)
					continue
				}
				got, err := tr.top(EventView, s.window, s.k, now)
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if g := formatTop(got); g != s.want {
					t.Errorf("step %d: top %s k=%d at %v = %q, want %q", i, s.window, s.k, s.at, g, s.want)
				}
				if s.len >= 0 {
					if n := tr.len(); n != s.len {
						t.Errorf("step %d: len = %d, want %d", i, n, s.len)
					}
				}
			}
			checkTrendInvariants(t, tr)
		})
	}
}

// errorer is what checkTrendInvariants needs of a *testing.T or *rapid.T.
type errorer interface {
	Helper()
	Errorf(format string, args ...any)
}

// checkTrendInvariants checks that no sum or bucket value is zero, that len
// counts the values held, and that each shard's video table numbers exactly
// the videos its values and sums hold, each with as many refs as holders.
func checkTrendInvariants(t errorer, tr *trendTracker) {
	t.Helper()
	n := 0
	for i := range tr.shards {
		sh := &tr.shards[i]
		sh.mu.Lock()
		vt := sh.videos
		holders := make(map[uint32]uint32)
		for key, s := range sh.series {
			for idx, bucket := range s.buckets {
				if len(bucket) == 0 {
					t.Errorf("%v bucket %d: empty map kept", key, idx)
				}
				for v, x := range bucket {
					if x == 0 {
						t.Errorf("%v bucket %d video %q: zero value kept", key, idx, vt.names[v])
					}
					holders[v]++
				}
				n += len(bucket)
			}
			for _, w := range s.wins {
				for v, x := range w.sums {
					if x == 0 {
						t.Errorf("%v window %s video %q: zero sum kept", key, tr.windows[w.id].Name, vt.names[v])
					}
					holders[v]++
				}
			}
		}
		if len(vt.ids) != len(holders) || len(vt.names) != len(vt.refs) || len(vt.names) != len(vt.ids)+len(vt.free) {
			t.Errorf("shard %d: %d videos numbered, %d held, %d numbers of which %d free", i, len(vt.ids), len(holders), len(vt.names), len(vt.free))
		}
		for id, name := range vt.names {
			switch want := holders[uint32(id)]; {
			case vt.refs[id] != want:
				t.Errorf("shard %d video %d %q: %d refs, held %d times", i, id, name, vt.refs[id], want)
			case want > 0 && (name == "" || vt.ids[name] != uint32(id)):
				t.Errorf("shard %d video %d: held, but named %q, numbered %d", i, id, name, vt.ids[name])
			case want == 0 && name != "":
				t.Errorf("shard %d video %d: not held, but still named %q", i, id, name)
			}
		}
		sh.mu.Unlock()
	}
	if got := tr.len(); got != n {
		t.Errorf("len = %d, want %d values held", got, n)
	}
}

func TestTrendUnknownWindow(t *testing.T) {
	tr := newTrendTracker(nil)
	for _, w := range []string{"", "2h", "1H", "minute"} {
		_, err := tr.top(EventView, w, 10, trendT0)
		if !errors.Is(err, ErrUnknownWindow) {
			t.Fatalf("top window %q: err = %v, want ErrUnknownWindow", w, err)
		}
		if !strings.Contains(err.Error(), "1h, 24h, 7d") || !strings.Contains(err.Error(), strconv.Quote(w)) {
			t.Errorf("top window %q: error %q should name it and list the supported windows", w, err)
		}
	}
	for _, k := range []int{0, -1} {
		got, err := tr.top(EventView, "1h", k, trendT0)
		if err != nil || len(got) != 0 {
			t.Errorf("top k=%d = %v, %v; want nothing, no error", k, got, err)
		}
	}
}

func TestNewTrendTracker(t *testing.T) {
	tr := newTrendTracker(nil)
	if len(tr.windows) != len(DefaultTopWindows) {
		t.Fatalf("nil windows: got %d windows, want the %d defaults", len(tr.windows), len(DefaultTopWindows))
	}
	for _, ws := range [][]TopWindow{
		{{Name: "1h", Res: crdt.Minute, Buckets: 60}, {Name: "1h", Res: crdt.Hour, Buckets: 1}},
		{{Name: "", Res: crdt.Minute, Buckets: 60}},
		{{Name: "x", Res: 0, Buckets: 60}},
		{{Name: "x", Res: crdt.Minute, Buckets: 0}},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("newTrendTracker(%+v) did not panic", ws)
				}
			}()
			newTrendTracker(ws)
		}()
	}
}

func TestTrendCache(t *testing.T) {
	tr := newTrendTracker(nil)
	b := crdt.BucketKey{Video: "a", Event: EventView, Res: crdt.Minute, Index: crdt.Minute.Index(trendT0)}
	tr.observe(b, 5, trendT0)
	tr.observe(crdt.BucketKey{Video: "b", Event: EventView, Res: crdt.Minute, Index: b.Index}, 1, trendT0)
	top := func(k int, atMs int64) string {
		t.Helper()
		got, err := tr.top(EventView, "1h", k, trendT0+atMs)
		if err != nil {
			t.Fatal(err)
		}
		return formatTop(got)
	}
	steps := []struct {
		do   func()
		k    int
		atMs int64
		want string
	}{
		{k: 1, atMs: 0, want: "a=5"},
		{do: func() { tr.observe(b, 7, trendT0+10) }, k: 1, atMs: 999, want: "a=5"},  // stale, within 1 s
		{k: 2, atMs: 999, want: "a=7 b=1"},                                           // a larger k recomputes
		{do: func() { tr.observe(b, 8, trendT0+10) }, k: 1, atMs: 1500, want: "a=7"}, // a smaller k reuses
		{k: 1, atMs: 1999, want: "a=8"},                                              // 1 s after the recompute
		{k: 5, atMs: 2500, want: "a=8 b=1"},                                          // a short list answers any k
		{do: func() { tr.observe(b, 1, trendT0+10) }, k: 9, atMs: 2600, want: "a=8 b=1"},
		{k: 9, atMs: 3500, want: "a=1 b=1"},
	}
	for i, s := range steps {
		if s.do != nil {
			s.do()
		}
		if got := top(s.k, s.atMs); got != s.want {
			t.Errorf("step %d: top k=%d at +%d ms = %q, want %q", i, s.k, s.atMs, got, s.want)
		}
	}
	// Callers own the slice they get.
	got, _ := tr.top(EventView, "1h", 9, trendT0+3500)
	got[0].Count = 99
	if s := top(9, 3500); s != "a=1 b=1" {
		t.Errorf("after the caller changed its copy: %q", s)
	}
	// The cache is bounded however many events are asked for.
	for i := range 3 * maxTopCacheEntries {
		if _, err := tr.top("e"+strconv.Itoa(i), "1h", 1, trendT0+3500); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(tr.cache); n > maxTopCacheEntries {
		t.Errorf("cache holds %d entries, want ≤ %d", n, maxTopCacheEntries)
	}
	for i := range tr.shards {
		for key := range tr.shards[i].series {
			if key.event != EventView {
				t.Errorf("a query created series %v", key)
			}
		}
	}
}

func TestTrendCompactsIdleVideos(t *testing.T) {
	tr := newTrendTracker(nil)
	const n = 40 * compactMinPeak // spread over shards, so that each reaches the threshold
	idx := crdt.Minute.Index(trendT0)
	for i := range n {
		tr.observe(crdt.BucketKey{Video: "v" + strconv.Itoa(i), Event: EventView, Res: crdt.Minute, Index: idx - 30}, 1, trendT0)
	}
	tr.observe(crdt.BucketKey{Video: "keep", Event: EventView, Res: crdt.Minute, Index: idx}, 1, trendT0)
	// 30 minutes later the burst leaves the window (not wholesale: the sums
	// are subtracted one by one), and the map must shed its capacity.
	got, err := tr.top(EventView, "1h", 10, trendT0+30*time.Minute.Milliseconds())
	if err != nil {
		t.Fatal(err)
	}
	if s := formatTop(got); s != "keep=1" {
		t.Fatalf("top = %q, want keep=1", s)
	}
	for i := range tr.shards {
		sh := &tr.shards[i]
		for _, s := range sh.series {
			for _, w := range s.wins {
				if w.peak > len(w.sums) {
					t.Errorf("shard %d window %s: peak %d for %d sums: not compacted", i, tr.windows[w.id].Name, w.peak, len(w.sums))
				}
			}
		}
	}
	if l := tr.len(); l != 1 {
		t.Errorf("len = %d, want 1", l)
	}
	checkTrendInvariants(t, tr)
}

// TestTrendVideoNumbers: a video's number is freed with the last bucket
// value and window sum that holds it, and reused: bursts of new videos that
// leave the windows in turn leave nothing numbered, and a shard's table
// grows no larger than the most videos it held at once.
func TestTrendVideoNumbers(t *testing.T) {
	tr := newTrendTracker(nil)
	const burst = 2000
	day := 24 * time.Hour.Milliseconds()
	var peak [trendShards]int // most videos a shard held at the end of a round
	for round := range 4 {
		now := trendT0 + int64(round)*8*day // past the 7d window of the round before
		for i := range burst {
			video := "r" + strconv.Itoa(round) + "-v" + strconv.Itoa(i)
			for _, res := range crdt.Resolutions {
				tr.observe(crdt.BucketKey{Video: video, Event: EventView, Res: res, Index: res.Index(now)}, uint64(i+1), now)
			}
		}
		// A value taken back to zero frees nothing that a window still holds.
		tr.observe(crdt.BucketKey{Video: "r" + strconv.Itoa(round) + "-v0", Event: EventView, Res: crdt.Minute, Index: crdt.Minute.Index(now)}, 0, now)
		checkTrendInvariants(t, tr)
		held := 0
		for i := range tr.shards {
			vt := tr.shards[i].videos
			held += len(vt.ids)
			peak[i] = max(peak[i], len(vt.ids))
			// A shard's first video of a round is numbered before the
			// series of its other resolutions let go of the last round's.
			if len(vt.names) > peak[i]+1 {
				t.Errorf("round %d shard %d: %d numbers for at most %d videos held", round, i, len(vt.names), peak[i])
			}
		}
		if held != burst {
			t.Fatalf("round %d: %d videos numbered, want %d (v0 is still in its hour and day)", round, held, burst)
		}
		got, err := tr.top(EventView, "7d", 1, now)
		if err != nil {
			t.Fatal(err)
		}
		if want := "r" + strconv.Itoa(round) + "-v" + strconv.Itoa(burst-1); len(got) != 1 || got[0].Video != want {
			t.Errorf("round %d: top 7d = %v, want %s", round, got, want)
		}
	}
	// Past every window, through queries alone (top advances the series).
	later := trendT0 + 40*day
	for _, w := range DefaultTopWindows {
		if got, err := tr.top(EventView, w.Name, 10, later); err != nil || len(got) != 0 {
			t.Fatalf("top %s long after: %v, %v; want nothing", w.Name, got, err)
		}
	}
	for i := range tr.shards {
		if n := len(tr.shards[i].videos.ids); n != 0 {
			t.Errorf("shard %d: %d videos still numbered after every window passed", i, n)
		}
	}
	checkTrendInvariants(t, tr)
}

// TestTrendConcurrent has writers observe while readers query (run it with
// -race). Each writer follows its own clock, but their clocks agree, so the
// final state is known: the oracle replays every writer's sequence.
func TestTrendConcurrent(t *testing.T) {
	tr := newTrendTracker(nil)
	const writers, readers, videos, rounds = 6, 3, 40, 150
	at := func(r int) int64 { return trendT0 + int64(r)*2500 } // ~6 minutes in all
	bucket := func(w, v, r int, res crdt.Resolution) crdt.BucketKey {
		return crdt.BucketKey{Video: fmt.Sprintf("w%d-v%d", w, v), Event: EventView, Res: res, Index: res.Index(at(r))}
	}
	value := func(v, r int) uint64 { return uint64((r + 1) * (v + 1) % 97) } // up and down, sometimes 0
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for r := range rounds {
				for v := range videos {
					for _, res := range crdt.Resolutions {
						tr.observe(bucket(w, v, r, res), value(v, r), at(r))
					}
				}
			}
		})
	}
	var stop atomic.Bool
	var rwg sync.WaitGroup
	var clock atomic.Int64 // the readers' clock: 1 s steps, to miss the cache
	clock.Store(trendT0)
	for range readers {
		rwg.Go(func() {
			for !stop.Load() {
				now := clock.Add(1000)
				for _, w := range DefaultTopWindows {
					got, err := tr.top(EventView, w.Name, 20, now)
					if err != nil {
						t.Error(err)
						return
					}
					if len(got) > 20 || !slices.IsSortedFunc(got, func(a, b VideoCount) int {
						return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Video, b.Video))
					}) {
						t.Errorf("top %s: %v is not a sorted top 20", w.Name, got)
					}
				}
				_ = tr.len()
			}
		})
	}
	wg.Wait()
	stop.Store(true)
	rwg.Wait()

	m := &trendModel{hwMs: max(at(rounds-1), clock.Load()) + topCacheMs, latest: map[crdt.BucketKey]uint64{}}
	for w := range writers {
		for r := range rounds {
			for v := range videos {
				for _, res := range crdt.Resolutions {
					m.latest[bucket(w, v, r, res)] = value(v, r)
				}
			}
		}
	}
	for _, w := range DefaultTopWindows {
		got, err := tr.top(EventView, w.Name, writers*videos, m.hwMs)
		if err != nil {
			t.Fatal(err)
		}
		if g, x := formatTop(got), formatTop(m.compute(EventView, w, writers*videos)); g != x {
			t.Errorf("top %s after the run:\n got %s\nwant %s", w.Name, g, x)
		}
	}
	checkTrendInvariants(t, tr)
}

// trendModel is the brute-force oracle: the latest value of every bucket
// ever observed, summed over a window's range at query time, and a mirror of
// the tracker's documented cache rule.
type trendModel struct {
	windows []TopWindow
	hwMs    int64
	latest  map[crdt.BucketKey]uint64
	cache   map[topCacheKey]trendModelCache
}

type trendModelCache struct {
	atMs   int64
	k      int
	videos []VideoCount
}

func (m *trendModel) compute(event string, w TopWindow, k int) []VideoCount {
	cur := w.Res.Index(m.hwMs)
	sums := map[string]uint64{}
	for b, v := range m.latest {
		if b.Event == event && b.Res == w.Res && b.Index <= cur && b.Index > cur-int64(w.Buckets) {
			sums[b.Video] += v
		}
	}
	var out []VideoCount
	for v, n := range sums {
		if n != 0 {
			out = append(out, VideoCount{Video: v, Count: n})
		}
	}
	slices.SortFunc(out, func(a, b VideoCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Video, b.Video))
	})
	return out[:min(k, len(out))]
}

func (m *trendModel) top(event string, w TopWindow, k int) []VideoCount {
	key := topCacheKey{event: event, window: w.Name}
	c, ok := m.cache[key]
	if !ok || m.hwMs-c.atMs >= topCacheMs || (k > c.k && len(c.videos) == c.k) {
		c = trendModelCache{atMs: m.hwMs, k: k, videos: m.compute(event, w, k)}
		m.cache[key] = c
	}
	return c.videos[:min(k, len(c.videos))]
}

// TestTrendMatchesBruteForce compares the tracker with the oracle over random
// observations (increases, decreases, zeros, old and future buckets) and
// queries at random times, including jumps of days and a clock going back.
func TestTrendMatchesBruteForce(t *testing.T) {
	windowSets := [][]TopWindow{
		DefaultTopWindows,
		{
			{Name: "2m", Res: crdt.Minute, Buckets: 2},
			{Name: "5m", Res: crdt.Minute, Buckets: 5},
			{Name: "1h", Res: crdt.Hour, Buckets: 1},
			{Name: "3h", Res: crdt.Hour, Buckets: 3},
			{Name: "1d", Res: crdt.Day, Buckets: 1},
		},
	}
	videos := []string{"a", "b", "c", "d", "e", "f"}
	events := []string{EventView, "like"}
	rapid.Check(t, func(rt *rapid.T) {
		// Short windows slide (and show off-by-one errors) most often.
		windows := rapid.SampledFrom(append(windowSets, windowSets[1])).Draw(rt, "windows")
		tr := newTrendTracker(windows)
		// The tracker's clock is the largest nowMs it was given, so the
		// model's moves only when the tracker is called.
		m := &trendModel{
			windows: windows,
			hwMs:    minInt64,
			latest:  map[crdt.BucketKey]uint64{},
			cache:   map[topCacheKey]trendModelCache{},
		}
		nowMs := trendT0 + rapid.Int64Range(-3_600_000, 3_600_000).Draw(rt, "start")
		keep := map[crdt.Resolution]int64{}
		for _, w := range windows {
			keep[w.Res] = max(keep[w.Res], int64(w.Buckets))
		}
		steps := rapid.IntRange(1, 120).Draw(rt, "steps")
		for range steps {
			switch rapid.IntRange(0, 9).Draw(rt, "op") {
			case 0, 1: // time moves
				dt := rapid.OneOf(
					rapid.Int64Range(0, 2_000),
					rapid.Int64Range(50_000, 130_000), // a minute or two
					rapid.Int64Range(0, 5*60_000),
					rapid.Int64Range(0, 4*3_600_000),
					rapid.Int64Range(0, 9*86_400_000),
					rapid.Int64Range(-5_000, 0), // a clock stepping back
				).Draw(rt, "dt")
				nowMs += dt
			case 2, 3, 4, 5, 6: // an observation
				m.hwMs = max(m.hwMs, nowMs)
				res := rapid.SampledFrom(crdt.Resolutions).Draw(rt, "res")
				k := max(keep[res], 1)
				rel := rapid.OneOf(rapid.Int64Range(-k-1, 3), rapid.Int64Range(-2, 3)).Draw(rt, "rel")
				b := crdt.BucketKey{
					Video: rapid.SampledFrom(videos).Draw(rt, "video"),
					Event: rapid.SampledFrom(events).Draw(rt, "event"),
					Res:   res,
					Index: res.Index(m.hwMs) + rel,
				}
				v := rapid.OneOf(rapid.Uint64Range(0, 3), rapid.Uint64Range(0, 1000)).Draw(rt, "value")
				tr.observe(b, v, nowMs)
				m.latest[b] = v
			default: // a query
				m.hwMs = max(m.hwMs, nowMs)
				w := rapid.SampledFrom(windows).Draw(rt, "window")
				event := rapid.SampledFrom(events).Draw(rt, "event")
				k := rapid.IntRange(1, len(videos)+1).Draw(rt, "k")
				got, err := tr.top(event, w.Name, k, nowMs)
				if err != nil {
					rt.Fatal(err)
				}
				want := m.top(event, w, k)
				if g, x := formatTop(got), formatTop(want); g != x {
					rt.Fatalf("top %s %s k=%d at %d (hw %d): got %q, want %q", event, w.Name, k, nowMs, m.hwMs, g, x)
				}
			}
		}
		// Uncached, every window and event is exact at the end.
		m.hwMs = max(m.hwMs, nowMs)
		for _, w := range windows {
			for _, event := range events {
				got := tr.compute(event, tr.byName[w.Name], len(videos), tr.now(nowMs))
				if g, x := formatTop(got), formatTop(m.compute(event, w, len(videos))); g != x {
					rt.Fatalf("final %s %s: got %q, want %q", event, w.Name, g, x)
				}
			}
		}
		checkTrendInvariants(rt, tr)
	})
}
