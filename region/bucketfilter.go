package region

import (
	"hash/maphash"
	"math"
	"sync"

	"github.com/tallyhq/tally/crdt"
)

// evictedBuckets remembers which time buckets have left memory (evicted,
// so written to disk first), for bucketEntries: a bucket newer than every
// bucket on disk at Open that is not in memory is new, and needs no disk
// read, unless it was evicted since. A node ingesting views of videos it has
// never seen, with its counter cache full, would otherwise read Badger for
// each one's three buckets, which are nearly always absent.
//
// Per resolution it keeps a Bloom filter of the evicted buckets of one
// index (the current minute, hour or day as the evictions go) and the
// largest other index evicted: a bucket of an older index than that may
// have been evicted, one of a newer index was not. It answers "may have
// been evicted" for every bucket that was (no false negatives) and for a
// few that were not (false positives, which cost a disk read). It is safe
// for concurrent use.
type evictedBuckets struct {
	seed maphash.Seed
	bits uint64 // per filter, a power of two

	mu  sync.RWMutex // protects res
	res [crdt.Day + 1]bucketFilter
}

// bucketFilter is one resolution's part of evictedBuckets.
type bucketFilter struct {
	cur   int64    // the index set holds evicted buckets of
	below int64    // every other evicted index is ≤ below
	set   []uint64 // Bloom filter of cur's evicted buckets; nil if none
}

// bucketFilterHashes is the number of bits a bucket sets in a filter.
const bucketFilterHashes = 3

// newEvictedBuckets sizes each filter at 16 bits per counter the cache holds
// (at least 64 Kib): under 4% false positives while a resolution's current
// index has had as many buckets evicted as the cache holds counters.
func newEvictedBuckets(capacity int) *evictedBuckets {
	bits := uint64(1 << 16)
	for bits < 16*uint64(capacity) && bits < 1<<32 {
		bits <<= 1
	}
	f := &evictedBuckets{seed: maphash.MakeSeed(), bits: bits}
	for i := range f.res {
		f.res[i] = bucketFilter{cur: math.MinInt64, below: math.MinInt64}
	}
	return f
}

// positions returns the filter bits of bucket b.
func (f *evictedBuckets) positions(b crdt.BucketKey) [bucketFilterHashes]uint64 {
	var h maphash.Hash
	h.SetSeed(f.seed)
	h.WriteString(b.Video)
	h.WriteByte(0)
	h.WriteString(b.Event)
	sum := h.Sum64()
	h1, h2 := sum, sum>>32|1 // double hashing: h1 + i·h2
	var out [bucketFilterHashes]uint64
	for i := range out {
		out[i] = (h1 + uint64(i)*h2) & (f.bits - 1)
	}
	return out
}

// add records that bucket b left memory. Call it before its entry leaves
// the table.
func (f *evictedBuckets) add(b crdt.BucketKey) {
	pos := f.positions(b)
	f.mu.Lock()
	defer f.mu.Unlock()
	r := &f.res[b.Res]
	switch {
	case b.Index < r.cur:
		r.below = max(r.below, b.Index)
		return
	case b.Index > r.cur:
		if r.set != nil {
			r.below = max(r.below, r.cur)
			clear(r.set)
		}
		r.cur = b.Index
	}
	if r.set == nil {
		r.set = make([]uint64, f.bits/64)
	}
	for _, p := range pos {
		r.set[p/64] |= 1 << (p % 64)
	}
}

// mayHold reports whether bucket b may have left memory (always, if it
// did).
func (f *evictedBuckets) mayHold(b crdt.BucketKey) bool {
	pos := f.positions(b)
	f.mu.RLock()
	defer f.mu.RUnlock()
	r := &f.res[b.Res]
	switch {
	case b.Index <= r.below:
		return true
	case b.Index != r.cur || r.set == nil:
		return false // newer than every evicted index, or between them
	}
	for _, p := range pos {
		if r.set[p/64]&(1<<(p%64)) == 0 {
			return false
		}
	}
	return true
}
