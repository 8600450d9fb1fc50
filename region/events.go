package region

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/tallyhq/tally/crdt"
)

// Event types and time buckets (issue 6).
//
// A counter is kept per (video, event type). Every counted event also
// increments three time buckets of its counter, the minute, the hour and the
// day it was ingested in (on this node's clock), in the same batch as the
// counter: each resolution is a complete, eagerly rolled-up series, and
// Σ buckets of any resolution = the counter's total on every replica once
// replication settles. A bucket is a PN-Counter like the total and merges
// the same way, so late deltas are idempotent and never counted twice; there
// is no later compaction step that could race with them. A compensation
// (exactly once across regions) or an unlike decrements the buckets of the
// time the event it takes back was ingested, so the series stays exact.
// Buckets older than their resolution's retention are forgotten (memory,
// replication, Badger TTL) and states for them that arrive later are dropped.

// EventLike is the event type of likes, which follow the like/unlike rules.
const EventLike = "like"

// MaxEventLen is the longest event type name, in bytes.
const MaxEventLen = 64

// Input error codes of event types, time ranges and windows.
const (
	CodeUnknownEvent          = "unknown_event"
	CodeInvalidRange          = "invalid_range"
	CodeInvalidStep           = "invalid_step"
	CodeResolutionNotRetained = "resolution_not_retained"
	CodeTooManyPoints         = "too_many_points"
	CodeInvalidWindow         = "invalid_window"
	CodeInvalidK              = "invalid_k"
	CodeTimeBucketsOff        = "time_buckets_off"
)

// MaxSeriesPoints bounds the points one Series call returns.
const MaxSeriesPoints = 10_080 // 7 days of minutes

// EventTypes returns every event type the node counts, sorted.
func (n *Node) EventTypes() []string {
	out := []string{EventView, EventLike}
	for _, ev := range n.cfg.EventTypes {
		if !slices.Contains(out, ev) {
			out = append(out, ev)
		}
	}
	slices.Sort(out)
	return out
}

// checkEvent validates an event type named in a request.
func (n *Node) checkEvent(ev string) error {
	if ev == EventView || ev == EventLike || slices.Contains(n.cfg.EventTypes, ev) {
		return nil
	}
	return inputErr(CodeUnknownEvent, "event type %q is not counted here; known types: %s", ev, strings.Join(n.EventTypes(), ", "))
}

// bucketExpiryMs is when bucket b may be forgotten: the end of the bucket
// plus its resolution's retention; math.MaxInt64 if kept forever.
func (n *Node) bucketExpiryMs(b crdt.BucketKey) int64 {
	keep := n.cfg.Retention.Of(b.Res)
	if keep == 0 {
		return 1<<63 - 1
	}
	return b.Res.Start(b.Index+1) + keep.Milliseconds()
}

// counterTTL is how long Badger keeps the state of counter k: 0 (forever)
// for totals, the rest of the retention for a bucket, and a negative value
// for a bucket already expired (not written at all).
func (n *Node) counterTTL(k crdt.Key, nowMs int64) time.Duration {
	b, ok := crdt.ParseBucketKey(k)
	if !ok {
		return 0
	}
	exp := n.bucketExpiryMs(b)
	if exp == 1<<63-1 {
		return 0
	}
	if exp <= nowMs {
		return -1
	}
	return msDuration(exp - nowMs)
}

// bucketEntries resolves the in-memory entries of the three buckets an event
// ingested at nowMs falls in; total is the entry of the event's counter, or
// nil. A total's buckets are remembered (trioCache): its next event in the
// same minute finds them without three lookups in the counter table.
func (n *Node) bucketEntries(total *counterEntry, video, event string, nowMs int64) ([3]*counterEntry, error) {
	var out [3]*counterEntry
	if n.cfg.DisableTimeBuckets {
		return out, nil
	}
	minute := crdt.Minute.Index(nowMs)
	var slot *atomic.Pointer[bucketTrio]
	if total != nil {
		slot = n.trios.slot(total)
		if t := slot.Load(); t.holds(total, minute) {
			for _, e := range t.entries {
				e.touch()
			}
			return t.entries, nil
		}
	}
	for i, b := range crdt.BucketsOf(video, event, nowMs) {
		k := n.counters.bucketKey(b)
		e, err := n.counters.load(k, func() (crdt.PNCounter, bool, error) {
			if b.Res.Start(b.Index) > n.storedBucketsMs && (n.evicted == nil || !n.evicted.mayHold(b)) {
				// Newer than every bucket on disk at Open and not evicted
				// since (asked after the miss: an eviction is recorded
				// before its entry leaves the table): not in memory means
				// new (this process writes only what it holds, and a
				// peer's state is merged into memory), so no disk read.
				return crdt.PNCounter{}, true, nil
			}
			c, _, err := n.storedCounter(k)
			return c, true, err
		})
		if err != nil {
			return out, err
		}
		out[i] = e
	}
	// Only a total counted before: a new video's first view, the most
	// common one where new videos pour in, would allocate a trio that its
	// next view, if any, comes too late for.
	if slot != nil {
		if st := total.view.state(); st != nil && st.LastUpdated() != 0 {
			slot.Store(&bucketTrio{total: total, minute: minute, entries: out})
		}
	}
	return out, nil
}

// trioCacheSlots is the size of a node's trioCache: room for the totals of
// the videos busy within a minute.
const (
	trioCacheBits  = 16
	trioCacheSlots = 1 << trioCacheBits
)

// trioCache remembers the time buckets of recently counted totals: a
// direct-mapped table, slotted by the total entry's address, of the entries
// of its minute, hour and day buckets of one minute. Resolving the three
// buckets of an event was three lookups in the counter table, each a few
// trips to memory in a table of millions, and time buckets were half the
// CPU of a batch of views spread over many videos (issue 9). An entry is
// used only while it and its buckets are in the counter table (evicted and
// expired entries are flagged) and for the minute it was made in; a miss
// resolves the buckets as before. The table keeps at most trioCacheSlots
// totals and their buckets from the garbage collector after they leave
// the counter table, until their slot is taken.
type trioCache struct {
	slots []atomic.Pointer[bucketTrio]
}

func newTrioCache() trioCache {
	return trioCache{slots: make([]atomic.Pointer[bucketTrio], trioCacheSlots)}
}

// bucketTrio is a total's bucket entries of one minute; never changed once
// stored.
type bucketTrio struct {
	total   *counterEntry
	minute  int64 // crdt.Minute index; the hour and day follow from it
	entries [3]*counterEntry
}

// slot is where total's trio goes. Go does not move heap objects, and a
// trio holds its total, so the address is a stable name while it is cached.
func (c trioCache) slot(total *counterEntry) *atomic.Pointer[bucketTrio] {
	h := uint64(uintptr(unsafe.Pointer(total))>>4) * 0x9e3779b97f4a7c15
	return &c.slots[h>>(64-trioCacheBits)]
}

// holds reports whether t is total's buckets for minute, all still in the
// counter table. t may be nil.
func (t *bucketTrio) holds(total *counterEntry, minute int64) bool {
	if t == nil || t.total != total || t.minute != minute || total.isEvicted() {
		return false
	}
	for _, e := range t.entries {
		if e.isEvicted() {
			return false
		}
	}
	return true
}

// adjustBuckets adds (or, with down, takes back) one event ingested at
// ingestMs in its buckets, skipping buckets already expired. Callers hold
// the admission gate.
func (n *Node) adjustBuckets(video, event string, ingestMs int64, down bool) error {
	if n.cfg.DisableTimeBuckets {
		return nil
	}
	nowMs := n.now().UnixMilli()
	for _, b := range crdt.BucketsOf(video, event, ingestMs) {
		if n.bucketExpiryMs(b) <= nowMs {
			continue
		}
		e, err := n.entry(b.Key())
		if err != nil {
			return err
		}
		if down {
			n.counters.decrement(e, n.id.Replica, nowMs)
		} else {
			n.counters.increment(e, n.id.Replica, 1, nowMs)
		}
	}
	return nil
}

// observeBuckets feeds durable bucket values to the trending tracker.
func (n *Node) observeBuckets(entries []*counterEntry) {
	nowMs := n.now().UnixMilli()
	for _, e := range entries {
		if b, ok := crdt.ParseBucketKey(e.key); ok {
			// The signed net value, wrapped into a uint64: the tracker's sums
			// add and subtract modulo 2^64, so a bucket that is negative (an
			// unlike of a like made in an earlier bucket) lowers the window's
			// sum instead of counting as zero.
			n.trends.observe(b, e.durableNet(), nowMs)
		}
	}
}

// expireBuckets forgets the buckets past their retention, from memory and
// from replication (Badger drops them by TTL). It sweeps at most once a
// minute.
func (n *Node) expireBuckets(now time.Time) {
	nowMs := now.UnixMilli()
	if nowMs < n.nextBucketExpire.Load() || !n.bucketExpireMu.TryLock() {
		return
	}
	defer n.bucketExpireMu.Unlock()
	n.nextBucketExpire.Store(nowMs + 60_000)
	expired := func(k crdt.Key) bool {
		b, ok := crdt.ParseBucketKey(k)
		return ok && n.bucketExpiryMs(b) <= nowMs
	}
	if n.counters.remove(expired) == 0 {
		return
	}
	r := n.repl.Load()
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.engine.Forget(now, expired)
	for k := range r.echoes {
		if expired(k) {
			delete(r.echoes, k)
		}
	}
}

// Count returns the durable count of event on video. Unknown videos count 0.
func (n *Node) Count(video, event string) (Count, error) {
	if err := CheckID(CodeInvalidVideoID, "videoId", video); err != nil {
		return Count{}, err
	}
	if err := n.checkEvent(event); err != nil {
		return Count{}, err
	}
	return n.countOf(crdt.Key{Video: video, Event: event})
}

// countOf reads counter k without caching a miss (unknown IDs must not fill
// memory).
func (n *Node) countOf(k crdt.Key) (Count, error) {
	e, err := n.counters.load(k, func() (crdt.PNCounter, bool, error) { return n.storedCounter(k) })
	if e == nil {
		return Count{}, err
	}
	if n.counters.sweepDue() {
		// Reads alone cut no batches: have one cut, to evict.
		n.committer.Kick()
	}
	v := e.view.Load()
	out := Count{Value: v.value, Compensated: v.compensated}
	if v.lastUpdated > 0 {
		out.LastUpdated = time.UnixMilli(v.lastUpdated).UTC()
	}
	return out, nil
}

// NetCount is ΣP − ΣN of the counter of event on video, signed: the raw
// value the simulator and tests check (Count clamps it at zero).
func (n *Node) NetCount(video, event string) (int64, error) {
	if err := CheckID(CodeInvalidVideoID, "videoId", video); err != nil {
		return 0, err
	}
	if err := n.checkEvent(event); err != nil {
		return 0, err
	}
	return n.netOf(crdt.Key{Video: video, Event: event})
}

// netOf is ΣP − ΣN of counter k (signed), without caching a miss.
func (n *Node) netOf(k crdt.Key) (int64, error) {
	if e := n.counters.lookup(k); e != nil {
		return int64(e.durableNet()), nil
	}
	c, _, err := n.storedCounter(k)
	if err != nil {
		return 0, err
	}
	return int64(c.P.Value() - c.N.Value()), nil
}

// Point is one bucket of a series.
type Point struct {
	Start time.Time // the bucket's start, UTC
	// Count is the bucket's net count: for likes, likes minus unlikes made
	// in it, which can be negative.
	Count int64
}

// Series is the count of one event on one video per bucket over a range.
type Series struct {
	Video  string
	Event  string
	Step   crdt.Resolution
	From   time.Time // start of the first bucket (from, rounded down)
	To     time.Time // end of the last bucket (to, rounded up)
	Total  int64     // Σ points
	Points []Point   // one per bucket, zero buckets included
}

// Retained describes the time buckets the node keeps, for error messages.
func (n *Node) Retained() string {
	var parts []string
	for _, r := range crdt.Resolutions {
		keep := n.cfg.Retention.Of(r)
		if keep == 0 {
			parts = append(parts, r.String()+" buckets forever")
		} else {
			parts = append(parts, fmt.Sprintf("%s buckets for %s", r, fmtDays(keep)))
		}
	}
	return strings.Join(parts, ", ")
}

func fmtDays(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

// Series returns the per-step counts of event on video in [from, to): every
// bucket of resolution step that overlaps the range. Totals over a range are
// exact for a resolution retained over the whole range; asking for a range
// that starts before step's retention is an input error that says what is
// kept.
func (n *Node) Series(video, event string, from, to time.Time, step crdt.Resolution) (Series, error) {
	if err := CheckID(CodeInvalidVideoID, "videoId", video); err != nil {
		return Series{}, err
	}
	if err := n.checkEvent(event); err != nil {
		return Series{}, err
	}
	if n.cfg.DisableTimeBuckets {
		return Series{}, inputErr(CodeTimeBucketsOff, "this node keeps no time buckets (started with time buckets disabled)")
	}
	if step < crdt.Minute || step > crdt.Day {
		return Series{}, inputErr(CodeInvalidStep, "step must be minute, hour or day")
	}
	if !from.Before(to) {
		return Series{}, inputErr(CodeInvalidRange, "from (%s) must be before to (%s)", from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339))
	}
	nowMs := n.now().UnixMilli()
	first, last := step.Index(from.UnixMilli()), step.Index(to.UnixMilli()-1)
	if keep := n.cfg.Retention.Of(step); keep != 0 {
		oldest := step.Index(nowMs - keep.Milliseconds())
		if first < oldest {
			return Series{}, inputErr(CodeResolutionNotRetained,
				"%s buckets are kept for %s only, so %s is too fine for a range starting %s; this node keeps %s",
				step, fmtDays(keep), step, from.UTC().Format(time.RFC3339), n.Retained())
		}
	}
	if last-first+1 > MaxSeriesPoints {
		return Series{}, inputErr(CodeTooManyPoints, "%d %s buckets asked for; at most %d per request (use a coarser step or a shorter range)", last-first+1, step, MaxSeriesPoints)
	}
	s := Series{
		Video: video, Event: event, Step: step,
		From: time.UnixMilli(step.Start(first)).UTC(), To: time.UnixMilli(step.Start(last + 1)).UTC(),
		Points: make([]Point, 0, last-first+1),
	}
	for i := first; i <= last; i++ {
		c, err := n.netOf(crdt.BucketKey{Video: video, Event: event, Res: step, Index: i}.Key())
		if err != nil {
			return Series{}, err
		}
		s.Points = append(s.Points, Point{Start: time.UnixMilli(step.Start(i)).UTC(), Count: c})
		s.Total += c
	}
	return s, nil
}

// Top returns up to k videos with the highest counts of event in the named
// trending window (see TopWindow), from the merged bucket state this node
// holds, highest first.
func (n *Node) Top(event, window string, k int) ([]VideoCount, error) {
	if err := n.checkEvent(event); err != nil {
		return nil, err
	}
	if n.cfg.DisableTimeBuckets {
		return nil, inputErr(CodeTimeBucketsOff, "this node keeps no time buckets (started with time buckets disabled), so it has no trending windows")
	}
	if k < 1 || k > MaxTopK {
		return nil, inputErr(CodeInvalidK, "k must be between 1 and %d", MaxTopK)
	}
	if len(window) > 16 {
		window = window[:16] + "…"
	}
	out, err := n.trends.top(event, window, k, n.now().UnixMilli())
	if err != nil {
		return nil, &InputError{Code: CodeInvalidWindow, Message: err.Error()}
	}
	return out, nil
}

// MaxTopK bounds the k of Top.
const MaxTopK = 1000

// Likes returns how many users like video: those whose latest like/unlike
// transition this node knows is a like (see likes.go). It is never negative.
func (n *Node) Likes(video string) (uint64, error) {
	if err := CheckID(CodeInvalidVideoID, "videoId", video); err != nil {
		return 0, err
	}
	return n.likes.count(video), nil
}

// Liked reports whether user likes video, as this node knows it.
func (n *Node) Liked(video, user string) bool { return n.likes.liked(video, user) }

// UniqueViewersStdError is the relative standard error of UniqueViewers.
const UniqueViewersStdError = crdt.HLLStdError

// Now is the node's clock (the simulator's and tests' fake one if set).
func (n *Node) Now() time.Time { return n.now() }

// UniqueViewers estimates the distinct users who viewed video, from a
// HyperLogLog sketch (precision 14: standard error 0.81%) merged across
// every replica.
func (n *Node) UniqueViewers(video string) (uint64, error) {
	if err := CheckID(CodeInvalidVideoID, "videoId", video); err != nil {
		return 0, err
	}
	est, _ := n.uniques.estimate(video)
	return est, nil
}

// eventOf is the stored event type of v.
func (v View) eventOf() string {
	if v.Event == "" {
		return EventView
	}
	return v.Event
}

// loggedEvent is v's event type as the raw event log names it: "unlike"
// for an unlike.
func (v View) loggedEvent() string {
	if v.Unlike {
		return "unlike"
	}
	return v.eventOf()
}
