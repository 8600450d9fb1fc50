package region

// trending.go keeps, per event and top window, a running count per video of
// the events in the window's last buckets, so that GET /v1/top answers
// without summing buckets per request.

import (
	"container/heap"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tallyhq/tally/crdt"
)

// TopWindow is a window /v1/top serves: the last Buckets buckets of Res, the
// current (partial) one included.
type TopWindow struct {
	Name    string          // as the API spells it: "1h", "24h", "7d"
	Res     crdt.Resolution // the width of one bucket
	Buckets int             // how many buckets, ≥ 1
}

// DefaultTopWindows are the windows /v1/top serves by default: 1h = the last
// 60 minute buckets, 24h = the last 24 hour buckets, 7d = the last 7 day
// buckets (UTC days), each including the current partial bucket.
var DefaultTopWindows = []TopWindow{
	{Name: "1h", Res: crdt.Minute, Buckets: 60},
	{Name: "24h", Res: crdt.Hour, Buckets: 24},
	{Name: "7d", Res: crdt.Day, Buckets: 7},
}

// ErrUnknownWindow is returned (wrapped, with the supported window names) by
// a top query for a window the tracker does not serve; it is the client's
// mistake (HTTP 400).
var ErrUnknownWindow = errors.New("unknown top window")

const (
	// trendShards is the number of independently locked partitions of the
	// tracker, by video: observes of different videos rarely contend.
	trendShards = 32
	// topCacheMs is how long, in ms of the caller's clock, a computed top
	// list is reused: the staleness bound of top.
	topCacheMs = 1000
	// maxTopCacheEntries bounds the cache of top lists; the event name comes
	// from the request, so without a bound it could grow without limit.
	maxTopCacheEntries = 1024
	// compactMinPeak is the size below which a sums map is never rebuilt to
	// shed its capacity (Go maps do not shrink when entries are deleted).
	compactMinPeak = 4096
)

// trendTracker maintains, for every event and top window, the count of each
// video over the window's buckets, from the latest durable value of each
// bucket (observe), and answers top-k queries over them (top).
//
// It is pure: it reads no clock (callers pass nowMs) and starts no goroutines.
// Its clock never goes backwards: it works as of the largest nowMs it has been
// given. Windows advance lazily, on observe and top. It is safe for concurrent
// use.
type trendTracker struct {
	windows []TopWindow    // as configured
	byName  map[string]int // window name → index in windows
	// byRes lists, per resolution, the indexes of its windows.
	byRes [crdt.Day + 1][]int
	names string // the supported window names, for errors

	hwMs   atomic.Int64 // the largest nowMs seen
	shards [trendShards]trendShard

	cacheMu sync.RWMutex                   // protects the cache map, not its entries
	cache   map[topCacheKey]*topCacheEntry // computed top lists
}

// trendShard holds the series of the videos hashed to it.
type trendShard struct {
	mu     sync.Mutex                      // protects series, values and videos
	series map[trendSeriesKey]*trendSeries // by event and resolution
	values int                             // (video, bucket) values held
	videos *videoTable                     // the IDs the series hold, as numbers
	_      [32]byte                        // one shard per 64-byte cache line: no false sharing of locks
}

// videoTable numbers the video IDs a shard's series hold, so that bucket
// values and window sums are maps keyed by a uint32: an observation hashes
// the ID string once (here) instead of in each of its maps, a value takes
// 16 bytes instead of 24, one string per video is kept however many buckets
// and windows hold it, and the maps hold no pointers for the garbage
// collector to scan (issue 9: observe was 41% of the CPU of a start-up
// with 10M videos, and the collector 23%). An observation still looks its
// video up once by string, here.
//
// A number lives while a bucket value or a window sum holds it (refs), and
// is then reused. The ids map is rebuilt smaller after a burst of videos has
// left (unref); names and refs keep their longest length, 20 bytes per
// number, for the numbers later videos take.
type videoTable struct {
	ids   map[string]uint32 // video → number
	names []string          // number → video; "" while free
	refs  []uint32          // number → bucket values and window sums holding it
	free  []uint32          // numbers to reuse
	peak  int               // largest len(ids) since ids was allocated
}

func newVideoTable() *videoTable { return &videoTable{ids: make(map[string]uint32)} }

// lookup returns video's number, if it has one.
func (vt *videoTable) lookup(video string) (uint32, bool) {
	id, ok := vt.ids[video]
	return id, ok
}

// number returns video's number, giving it one (with no refs: the caller
// refs it at once) if it has none.
func (vt *videoTable) number(video string) uint32 {
	if id, ok := vt.ids[video]; ok {
		return id
	}
	var id uint32
	if n := len(vt.free); n > 0 {
		id, vt.free = vt.free[n-1], vt.free[:n-1]
		vt.names[id] = video
	} else {
		id = uint32(len(vt.names))
		vt.names = append(vt.names, video)
		vt.refs = append(vt.refs, 0)
	}
	vt.ids[video] = id
	vt.peak = max(vt.peak, len(vt.ids))
	return id
}

// ref counts one more holder of id.
func (vt *videoTable) ref(id uint32) { vt.refs[id]++ }

// unref counts one holder of id less, freeing the number with its last.
func (vt *videoTable) unref(id uint32) {
	if vt.refs[id]--; vt.refs[id] > 0 {
		return
	}
	delete(vt.ids, vt.names[id])
	vt.names[id] = ""
	vt.free = append(vt.free, id)
	if vt.peak >= compactMinPeak && len(vt.ids) <= vt.peak/4 {
		// A Go map keeps the capacity of deleted entries (see compact).
		ids := make(map[string]uint32, len(vt.ids))
		for v, n := range vt.ids {
			ids[v] = n
		}
		vt.ids, vt.peak = ids, len(ids)
	}
}

// trendSeriesKey names the buckets of one event at one resolution.
type trendSeriesKey struct {
	event string
	res   crdt.Resolution
}

// trendSeries holds one shard's buckets of one event at one resolution and
// the sums of the windows of that resolution.
//
// Invariant: for every window w, w.sums[v] = Σ buckets[i][v] over i in
// [cur−w.span+1, cur], and no sum or bucket value is 0. Buckets older than
// cur−keep+1 are dropped; buckets newer than cur (a peer's clock ahead of
// ours) are kept and enter the windows as cur reaches them.
type trendSeries struct {
	cur     int64                       // bucket index the sums are as of
	keep    int64                       // buckets kept: the longest window
	buckets map[int64]map[uint32]uint64 // index → video number → latest value
	wins    []trendWindow               // the windows of this resolution
}

// trendWindow is one window's running sums within a series.
type trendWindow struct {
	id   int               // index in trendTracker.windows
	span int64             // buckets in the window
	sums map[uint32]uint64 // video number → count in the window
	peak int               // largest len(sums) since sums was allocated
}

// topCacheKey names a cached top list.
type topCacheKey struct{ event, window string }

// topCacheEntry holds the latest top list of one (event, window).
type topCacheEntry struct {
	list atomic.Pointer[topList] // nil until computed; read without locks on a hit
	mu   sync.Mutex              // held while computing, so that concurrent misses compute once
}

// topList is a top list computed as of atMs for up to k videos. It is never
// modified once stored.
type topList struct {
	atMs   int64
	k      int
	videos []VideoCount
}

// answers reports whether l may answer a query for k videos at now: it is
// under topCacheMs old, and either computed for at least k videos or shorter
// than its k (then it holds every video with a count).
func (l *topList) answers(k int, now int64) bool {
	return l != nil && now >= l.atMs && now-l.atMs < topCacheMs && (k <= l.k || len(l.videos) < l.k)
}

// newTrendTracker returns a tracker serving windows (DefaultTopWindows if
// nil). It panics on an invalid window (no name, a duplicate name, an unknown
// resolution or fewer than one bucket): windows come from a validated Config.
func newTrendTracker(windows []TopWindow) *trendTracker {
	if windows == nil {
		windows = DefaultTopWindows
	}
	t := &trendTracker{
		windows: slices.Clone(windows),
		byName:  make(map[string]int, len(windows)),
		cache:   make(map[topCacheKey]*topCacheEntry),
	}
	names := make([]string, 0, len(windows))
	for i, w := range t.windows {
		if _, dup := t.byName[w.Name]; w.Name == "" || dup || w.Res < crdt.Minute || w.Res > crdt.Day || w.Buckets < 1 {
			panic(fmt.Sprintf("region: invalid top window %+v: want a unique name, a resolution and at least one bucket", w))
		}
		t.byName[w.Name] = i
		t.byRes[w.Res] = append(t.byRes[w.Res], i)
		names = append(names, w.Name)
	}
	t.names = strings.Join(names, ", ")
	t.hwMs.Store(minInt64)
	for i := range t.shards {
		t.shards[i].series = make(map[trendSeriesKey]*trendSeries)
		t.shards[i].videos = newVideoTable()
	}
	return t
}

const minInt64 = -1 << 63

// now advances the tracker's clock to nowMs unless it is already later, and
// returns it: every series then advances to the same time, whichever shard.
func (t *trendTracker) now(nowMs int64) int64 { return raiseTo(&t.hwMs, nowMs) }

// shardOf hashes video (FNV-1a) to its shard.
func (t *trendTracker) shardOf(video string) *trendShard {
	h := uint32(2166136261)
	for i := 0; i < len(video); i++ {
		h ^= uint32(video[i])
		h *= 16777619
	}
	return &t.shards[h%trendShards]
}

// observe records that bucket b's durable value is now value, at nowMs on
// the node's clock; value may be lower than the last one (an unlike, a
// compensation). Buckets older than every window of b.Res are ignored;
// buckets ahead of the clock (a peer's clock is ahead of ours) are kept,
// however far ahead, and count from when the clock reaches them.
func (t *trendTracker) observe(b crdt.BucketKey, value uint64, nowMs int64) {
	if b.Res < crdt.Minute || b.Res > crdt.Day || len(t.byRes[b.Res]) == 0 {
		return // no window reads this resolution
	}
	cur := b.Res.Index(t.now(nowMs))
	sh := t.shardOf(b.Video)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	key := trendSeriesKey{event: b.Event, res: b.Res}
	s := sh.series[key]
	if s == nil {
		if value == 0 {
			return // nothing to record, and no window to advance
		}
		s = t.newSeries(b.Res, cur)
		sh.series[key] = s
	}
	vt := sh.videos
	sh.values -= s.advance(cur, vt)
	if b.Index <= s.cur-s.keep {
		return
	}
	bucket := s.buckets[b.Index]
	id, known := vt.lookup(b.Video)
	var old uint64
	if known {
		old = bucket[id]
	}
	switch {
	case old == value:
		return
	case value == 0:
		delete(bucket, id)
		sh.values--
		if len(bucket) == 0 {
			delete(s.buckets, b.Index)
		}
		// The bucket's hold on id goes after the windows below have used it.
		defer vt.unref(id)
	default:
		if !known {
			id = vt.number(b.Video)
		}
		if bucket == nil {
			bucket = make(map[uint32]uint64)
			s.buckets[b.Index] = bucket
		}
		if old == 0 {
			sh.values++
			vt.ref(id)
		}
		bucket[id] = value
	}
	// Sums are true sums of uint64 values, so modular arithmetic gives the
	// exact result for a decrease too.
	delta := value - old
	for i := range s.wins {
		w := &s.wins[i]
		if b.Index <= s.cur && b.Index > s.cur-w.span {
			w.add(id, delta, vt)
		}
	}
}

// newSeries returns an empty series of res as of bucket cur.
func (t *trendTracker) newSeries(res crdt.Resolution, cur int64) *trendSeries {
	s := &trendSeries{cur: cur, buckets: make(map[int64]map[uint32]uint64)}
	for _, id := range t.byRes[res] {
		span := int64(t.windows[id].Buckets)
		s.keep = max(s.keep, span)
		s.wins = append(s.wins, trendWindow{id: id, span: span, sums: make(map[uint32]uint64)})
	}
	return s
}

// advance moves the series' windows to bucket to (never back) and drops the
// buckets older than every window; it returns the number of values dropped.
// vt is the shard's video table.
func (s *trendSeries) advance(to int64, vt *videoTable) (dropped int) {
	from := s.cur
	if to <= from {
		return 0
	}
	for i := range s.wins {
		w := &s.wins[i]
		lo := to - w.span + 1
		if to-from >= w.span {
			// The whole window left: start afresh rather than subtract.
			for v := range w.sums {
				vt.unref(v)
			}
			w.sums, w.peak = make(map[uint32]uint64), 0
		} else {
			s.eachBucket(from-w.span+1, lo-1, func(bucket map[uint32]uint64) {
				for v, n := range bucket {
					w.add(v, -n, vt)
				}
			})
			lo = from + 1
		}
		s.eachBucket(lo, to, func(bucket map[uint32]uint64) {
			for v, n := range bucket {
				w.add(v, n, vt)
			}
		})
		w.compact()
	}
	s.cur = to
	for i, bucket := range s.buckets {
		if i <= to-s.keep {
			dropped += len(bucket)
			for v := range bucket {
				vt.unref(v)
			}
			delete(s.buckets, i)
		}
	}
	return dropped
}

// eachBucket calls fn with every held bucket of index in [lo, hi], by index
// or by a scan of the held buckets, whichever is shorter (a window may be
// long and mostly empty).
func (s *trendSeries) eachBucket(lo, hi int64, fn func(map[uint32]uint64)) {
	if hi < lo {
		return
	}
	if uint64(hi-lo) < uint64(len(s.buckets)) {
		for i := lo; i <= hi; i++ {
			if bucket, ok := s.buckets[i]; ok {
				fn(bucket)
			}
		}
		return
	}
	for i, bucket := range s.buckets {
		if i >= lo && i <= hi {
			fn(bucket)
		}
	}
}

// window returns the sums of window id.
func (s *trendSeries) window(id int) *trendWindow {
	for i := range s.wins {
		if s.wins[i].id == id {
			return &s.wins[i]
		}
	}
	return nil
}

// add adds delta (modulo 2⁶⁴, so a decrease is −n) to the sum of video
// number id, deleting it at zero so that idle videos cost nothing; a sum
// holds its number in vt while it is not zero.
func (w *trendWindow) add(id uint32, delta uint64, vt *videoTable) {
	old := w.sums[id]
	n := old + delta
	switch {
	case n == old:
		return
	case n == 0:
		delete(w.sums, id)
		vt.unref(id)
		return
	case old == 0:
		vt.ref(id)
	}
	w.sums[id] = n
	w.peak = max(w.peak, len(w.sums))
}

// compact rebuilds sums once it holds a quarter of its peak, since a Go map
// keeps the capacity of deleted entries: after a burst of videos leaves the
// window, the memory goes with them.
func (w *trendWindow) compact() {
	if w.peak < compactMinPeak || len(w.sums) > w.peak/4 {
		return
	}
	sums := make(map[uint32]uint64, len(w.sums))
	for v, n := range w.sums {
		sums[v] = n
	}
	w.sums, w.peak = sums, len(sums)
}

// top returns up to k videos with the highest counts of event in the named
// window as of nowMs, highest first, ties by video ID ascending; LastUpdated
// is left zero. An unknown window is an error wrapping ErrUnknownWindow.
//
// Staleness: a list is computed at most once per (event, window) per
// topCacheMs (1 s) of the caller's clock and reused for any k up to the one
// it was computed for, so it may miss up to 1 s of observations (and of
// window movement) before nowMs. Computing a list reads every video with a
// non-zero count in the window (one pass, a k-sized heap), holding each
// shard's lock in turn.
func (t *trendTracker) top(event, window string, k int, nowMs int64) ([]VideoCount, error) {
	id, ok := t.byName[window]
	if !ok {
		return nil, fmt.Errorf("top %q over window %q: %w (supported: %s)", event, window, ErrUnknownWindow, t.names)
	}
	if k <= 0 {
		return nil, nil
	}
	now := t.now(nowMs)
	e := t.cacheEntry(topCacheKey{event: event, window: window})
	l := e.list.Load()
	if !l.answers(k, now) {
		e.mu.Lock()
		// Another caller may have computed it, or moved the clock, meanwhile.
		now = t.now(nowMs)
		if l = e.list.Load(); !l.answers(k, now) {
			l = &topList{atMs: now, k: k, videos: t.compute(event, id, k, now)}
			e.list.Store(l)
		}
		e.mu.Unlock()
	}
	return slices.Clone(l.videos[:min(k, len(l.videos))]), nil
}

// cacheEntry returns the cache entry of key, creating it if need be.
func (t *trendTracker) cacheEntry(key topCacheKey) *topCacheEntry {
	t.cacheMu.RLock()
	e := t.cache[key]
	t.cacheMu.RUnlock()
	if e != nil {
		return e
	}
	t.cacheMu.Lock()
	defer t.cacheMu.Unlock()
	if e = t.cache[key]; e == nil {
		if len(t.cache) >= maxTopCacheEntries {
			t.cache = make(map[topCacheKey]*topCacheEntry)
		}
		e = &topCacheEntry{}
		t.cache[key] = e
	}
	return e
}

// compute returns the top k videos of event in window id as of now (the
// tracker's clock), bypassing the cache.
func (t *trendTracker) compute(event string, id, k int, now int64) []VideoCount {
	res := t.windows[id].Res
	cur := res.Index(now)
	key := trendSeriesKey{event: event, res: res}
	h := make(minVideoHeap, 0, min(k, 1024)) // k comes from the request
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		if s := sh.series[key]; s != nil {
			vt := sh.videos
			sh.values -= s.advance(cur, vt)
			for v, n := range s.window(id).sums {
				if int64(n) <= 0 {
					// A net sum at or below zero (wrapped): more taken back
					// in the window than added, e.g. unlikes of likes made
					// before it. Not trending.
					continue
				}
				if len(h) < k {
					heap.Push(&h, VideoCount{Video: vt.names[v], Count: n})
					continue
				}
				// Cheap rejection first: most videos are below the k-th.
				if n < h[0].Count || n == h[0].Count && vt.names[v] > h[0].Video {
					continue
				}
				h[0] = VideoCount{Video: vt.names[v], Count: n}
				heap.Fix(&h, 0)
			}
		}
		sh.mu.Unlock()
	}
	out := []VideoCount(h)
	slices.SortFunc(out, func(a, b VideoCount) int {
		switch {
		case lessVideoCount(b, a):
			return -1
		case lessVideoCount(a, b):
			return 1
		}
		return 0
	})
	return out
}

// len reports how many (video, bucket) values the tracker holds, for a
// memory gauge. Windows are not advanced, so it may count buckets about to
// be dropped.
func (t *trendTracker) len() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		n += sh.values
		sh.mu.Unlock()
	}
	return n
}
