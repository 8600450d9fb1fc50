package replication

import (
	"cmp"
	"slices"

	"github.com/tallyhq/tally/crdt"
)

// Hashing. Digests are compared across processes and versions, so the hashes
// are fixed functions of the bytes (64-bit FNV-1a, then the splitmix64
// finalizer for avalanche), never a seeded or per-process hash.

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvBytes(h uint64, b []byte) uint64 {
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h
}

func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

func fnvUint(h, v uint64) uint64 {
	for i := 0; i < 8; i++ {
		h ^= v & 0xff
		h *= fnvPrime
		v >>= 8
	}
	return h
}

func mix64(h uint64) uint64 {
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// fnvKey hashes a key with length prefixes, so ("ab","c") ≠ ("a","bc").
func fnvKey(k crdt.Key) uint64 {
	h := fnvUint(fnvOffset, uint64(len(k.Video)))
	h = fnvString(h, k.Video)
	h = fnvUint(h, uint64(len(k.Event)))
	return fnvString(h, k.Event)
}

// bucketOf places k among n buckets (n a power of two). Because it masks the
// low bits, folding a digest of n buckets to m < n buckets is an XOR of the
// sums congruent mod m.
func bucketOf(k crdt.Key, n int) uint32 {
	return uint32(mix64(fnvKey(k)) & uint64(n-1))
}

// stateHash is a key's contribution to its bucket sum: a hash of the key and
// the canonical encoding of its state. An empty state contributes 0, as if the
// key were absent, so a peer that never saw the key agrees.
func stateHash(k crdt.Key, enc []byte, zero bool) uint64 {
	if zero {
		return 0
	}
	return mix64(fnvBytes(fnvKey(k)^0x9e3779b97f4a7c15, enc))
}

// fold XORs a digest down to m buckets (m a power of two ≤ len(sums)).
func fold(sums []uint64, m int) []uint64 {
	if len(sums) == m {
		return sums
	}
	out := make([]uint64, m)
	for i, s := range sums {
		out[i&(m-1)] ^= s
	}
	return out
}

// keyID numbers a key within one engine (an index into Engine.keys), so that
// buckets, the change log and repair pages hold 4 bytes per key, and a key
// costs one map lookup per change.
type keyID = uint32

// keyInfo is what the engine remembers of a key.
type keyInfo struct {
	key  crdt.Key
	hash uint64 // stateHash of the state last reported
	seq  uint64 // latest local sequence number; 0 for keys only loaded
	size uint32 // encoded size of that state, for batching
	echo uint32 // number of a peer known to hold this very state (ChangedFrom, acked repair page), or 0
}

// bucket holds the keys of one digest bucket. Keys are never removed (a
// counter never disappears); they are sorted lazily when a repair pages them.
type bucket struct {
	ids    []keyID
	sorted bool
}

func cmpKey(a, b crdt.Key) int {
	if c := cmp.Compare(a.Video, b.Video); c != 0 {
		return c
	}
	return cmp.Compare(a.Event, b.Event)
}

// sortedIDs returns the bucket's keys in key order.
func (e *Engine) sortedIDs(b *bucket) []keyID {
	if !b.sorted {
		slices.SortFunc(b.ids, func(x, y keyID) int { return cmpKey(e.keys[x].key, e.keys[y].key) })
		b.sorted = true
	}
	return b.ids
}

// diffBuckets compares a peer's digest with ours. It returns the differing
// buckets in the peer's bucket space (to tell the peer) and in ours (to page
// our keys), handling peers configured with a different bucket count.
func diffBuckets(theirs, ours []uint64) (theirSpace, ourSpace []uint32) {
	c := min(len(theirs), len(ours))
	ft, fo := fold(theirs, c), fold(ours, c)
	diff := make([]bool, c)
	any := false
	for i := range c {
		if ft[i] != fo[i] {
			diff[i], any = true, true
		}
	}
	if !any {
		return nil, nil
	}
	expand := func(n int) []uint32 {
		var out []uint32
		for b := range n {
			if diff[b&(c-1)] {
				out = append(out, uint32(b))
			}
		}
		return out
	}
	return expand(len(theirs)), expand(len(ours))
}
