package region

import (
	"hash/maphash"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

const limiterShards = 64

// keyedLimiter is a token bucket per key (user or IP) with bounded memory.
//
// Most keys are seen once (a viral video's viewers), and a key seen once
// needs no bucket: its bucket started full, so that event was allowed (with
// a burst of at least 1). Each shard remembers such keys in a fixed array,
// two ways per set, by the key's 64-bit hash and the first event's time:
// one memory probe per new key, where maps took three (a miss in each of
// two generations, then an insert; issue 9). When the key comes back its
// bucket (a rate.Limiter) is made, takes that first event again at its time,
// then the new one, so it ends in the state it would have had from the
// start. A key whose record another key's took since (the older of a set's
// two goes) starts again with a full bucket, which only ever errs towards
// counting a view.
//
// Buckets live in two generations of maps: when the current one is full the
// older is dropped, so a key seen in the last two generations keeps its
// bucket, and one not seen for that long starts again with a full bucket.
//
// Keys are held by their 64-bit hash: the maps then neither hash nor compare
// strings, nor keep the request's strings alive. Two keys of one hash (about
// 2^-64 likely per pair) would share a bucket.
type keyedLimiter struct {
	limit rate.Limit
	burst int
	// perGen is the buckets per generation per shard, and firstSets the
	// sets of first-seen records per shard (a power of two): together at
	// most the RateLimitKeys the limiter was made with, once that is at
	// least 4 per shard.
	perGen, firstSets int
	// filterBits is the length of a generation's filter (limiterShard.has),
	// a power of two: 8 bits per bucket at most, so that a key with no
	// bucket (most are seen once) is found out without a map lookup in 7 of 8.
	filterBits int
	seed       maphash.Seed
	shards     [limiterShards]limiterShard
}

type limiterShard struct {
	mu       sync.Mutex // protects the fields below
	cur, old map[uint64]*rate.Limiter
	// curHas and oldHas are a filter of the keys of each generation's
	// buckets: a bit per place, set for every key put in the generation
	// (and left set when it moves on). A clear bit means the map has no
	// bucket for the key: the maps are megabytes, read at random, and
	// the filters of a shard are 8 KB. Made with the first bucket.
	curHas, oldHas []uint64
	first          []firstSeen // 2 * firstSets records, made on first use
	firstN         int         // records in use
	touched        uint64      // a sum of the words allowMany read, for nothing else
}

// firstSeen records a key seen once: its hash (0: free) and the time of its
// event, unix ns.
type firstSeen struct {
	h  uint64
	ns int64
}

func newKeyedLimiter(perSecond float64, burst, maxKeys int) *keyedLimiter {
	perShard := maxKeys / limiterShards
	sets := 1
	for 4*(2*sets) <= perShard { // records (two a set) for half of perShard at most
		sets *= 2
	}
	l := &keyedLimiter{limit: rate.Limit(perSecond), burst: burst, perGen: max(1, perShard/4), firstSets: sets, seed: maphash.MakeSeed()}
	l.filterBits = 64
	for l.filterBits < 8*l.perGen {
		l.filterBits *= 2
	}
	for i := range l.shards {
		l.shards[i].cur = make(map[uint64]*rate.Limiter)
	}
	return l
}

// hash is key's hash, never 0 (which marks a free record).
func (l *keyedLimiter) hash(key string) uint64 {
	if h := maphash.String(l.seed, key); h != 0 {
		return h
	}
	return 1
}

// allow takes one token from key's bucket at time now.
func (l *keyedLimiter) allow(key string, now time.Time) bool {
	h := l.hash(key)
	s := &l.shards[h%limiterShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.allowLocked(l, h, now)
}

// limiterScratch is allowMany's working memory, pooled.
type limiterScratch struct {
	hashes []uint64
	order  []int32
	ends   [limiterShards]int32
}

var limiterScratchPool = sync.Pool{New: func() any { return new(limiterScratch) }}

// allowMany is allow for each of keys in turn, at the same time now, with
// the answer for keys[i] in allowed[i], for a large ingest call: it takes
// each shard's lock once, and reads the first-seen records of a shard's
// keys before it decides them (shardOrder). A key's events are decided in
// their order in keys.
func (l *keyedLimiter) allowMany(keys []string, now time.Time, allowed []bool) {
	sc := limiterScratchPool.Get().(*limiterScratch)
	defer limiterScratchPool.Put(sc)
	sc.hashes = sc.hashes[:0]
	for _, k := range keys {
		sc.hashes = append(sc.hashes, l.hash(k))
	}
	hs := sc.hashes
	sc.order = shardOrder(sc.order, sc.ends[:], len(hs), func(i int) int { return int(hs[i] % limiterShards) })
	eachRun(sc.order, sc.ends[:], func(si int, run []int32) {
		s := &l.shards[si]
		s.mu.Lock()
		s.touch(l, hs, run)
		for _, i := range run {
			allowed[i] = s.allowLocked(l, hs[i], now)
		}
		s.mu.Unlock()
	})
}

// touch looks up each key of hs[run] where allowLocked will, in the two
// generations of buckets and the first-seen records, so that the memory
// reads of allowLocked that follow have been made, together, already
// (shardOrder). Callers hold s.mu.
func (s *limiterShard) touch(l *keyedLimiter, hs []uint64, run []int32) {
	var sum uint64
	for _, i := range run {
		h := hs[i]
		if l.has(s.curHas, h) {
			if _, ok := s.cur[h]; ok {
				sum++
			}
		}
		if l.has(s.oldHas, h) {
			if _, ok := s.old[h]; ok {
				sum++
			}
		}
		if s.first != nil {
			sum += s.first[l.firstSet(h)].h
		}
	}
	s.touched = sum // keeps the reads from being left out
}

// firstSet is where the first-seen records of the set of hash h start in
// its shard's first.
func (l *keyedLimiter) firstSet(h uint64) int {
	return 2 * int((h/limiterShards)&uint64(l.firstSets-1))
}

// allowLocked is allow for the key of hash h, of shard s. Callers hold s.mu.
func (s *limiterShard) allowLocked(l *keyedLimiter, h uint64, now time.Time) bool {
	if l.has(s.curHas, h) {
		if lim, ok := s.cur[h]; ok {
			return lim.AllowN(now, 1)
		}
	}
	if l.has(s.oldHas, h) {
		if lim, ok := s.old[h]; ok {
			delete(s.old, h)
			s.put(l, h, lim)
			return lim.AllowN(now, 1)
		}
	}
	if s.first == nil {
		s.first = make([]firstSeen, 2*l.firstSets)
		prefault(s.first)
	}
	set := s.first[l.firstSet(h):][:2]
	for i := range set {
		if set[i].h == h { // the key's second event: it needs its bucket now
			lim := rate.NewLimiter(l.limit, l.burst)
			lim.AllowN(time.Unix(0, set[i].ns), 1) // the first event, at its time
			set[i] = firstSeen{}
			s.firstN--
			s.put(l, h, lim)
			return lim.AllowN(now, 1)
		}
	}
	if l.burst < 1 {
		// A bucket that holds no token: the key's first event already
		// depends on the rate (an infinite one allows it), and so does
		// every later one.
		lim := rate.NewLimiter(l.limit, l.burst)
		s.put(l, h, lim)
		return lim.AllowN(now, 1)
	}
	// A full bucket: the first event is allowed. The record goes into a
	// free way of its set, or over the older one.
	w := 0
	switch {
	case set[0].h == 0:
	case set[1].h == 0:
		w = 1
	default:
		if set[1].ns < set[0].ns {
			w = 1
		}
		s.firstN--
	}
	set[w] = firstSeen{h: h, ns: now.UnixNano()}
	s.firstN++
	return true
}

// put adds key h's bucket to the current generation, starting a new one
// first if it is full. Callers hold s.mu.
func (s *limiterShard) put(l *keyedLimiter, h uint64, lim *rate.Limiter) {
	if len(s.cur) >= l.perGen {
		s.old, s.cur = s.cur, make(map[uint64]*rate.Limiter, l.perGen)
		s.oldHas, s.curHas = s.curHas, s.oldHas
		clear(s.curHas)
	}
	if s.curHas == nil {
		s.curHas = make([]uint64, l.filterBits/64)
	}
	s.cur[h] = lim
	i := l.filterPlace(h)
	s.curHas[i/64] |= 1 << (i % 64)
}

// filterPlace is key h's bit in a generation's filter: from the high
// half of h, which shard and first-seen set do not use.
func (l *keyedLimiter) filterPlace(h uint64) int { return int(h>>32) & (l.filterBits - 1) }

// has reports whether filter may hold key h (a nil filter holds none).
func (l *keyedLimiter) has(filter []uint64, h uint64) bool {
	if filter == nil {
		return false
	}
	i := l.filterPlace(h)
	return filter[i/64]&(1<<(i%64)) != 0
}

// len is the number of keys held: buckets and first-seen records.
func (l *keyedLimiter) len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.cur) + len(s.old) + s.firstN
		s.mu.Unlock()
	}
	return n
}

// bound is the most keys the limiter holds: two generations of buckets and
// the first-seen records, in every shard.
func (l *keyedLimiter) bound() int { return limiterShards * (2*l.perGen + 2*l.firstSets) }
