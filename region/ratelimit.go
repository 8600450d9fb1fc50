package region

import (
	"hash/maphash"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

const limiterShards = 64

// keyedLimiter is a token bucket per key (user or IP) with bounded memory:
// each shard keeps two generations of buckets, and when the current one is
// full the older is dropped. A key seen in the last two generations keeps its
// bucket; one not seen for that long starts again with a full bucket, which
// only ever errs towards counting a view.
type keyedLimiter struct {
	limit  rate.Limit
	burst  int
	perGen int // buckets per generation per shard
	seed   maphash.Seed
	shards [limiterShards]limiterShard
}

// limiterShard holds the buckets of the keys whose hash falls in it, by
// that 64-bit hash rather than by the key: the map then neither hashes nor
// compares strings, nor keeps the request's strings alive. Two keys of one
// hash (about 2^-64 likely per pair) would share a bucket.
type limiterShard struct {
	mu       sync.Mutex // protects cur and old
	cur, old map[uint64]limiterSlot
}

// limiterSlot is one key's bucket. A key seen once needs no rate.Limiter:
// its bucket started full, so that event was allowed (with a burst of at
// least 1), and firstNs records when. The limiter is made when the key comes
// back, and takes that first event again at its time before the new one, so
// it ends in the state it would have had from the start. Most keys of a
// viral video's viewers are seen once.
type limiterSlot struct {
	lim     *rate.Limiter // nil until the key's second event
	firstNs int64         // the first event's time, unix ns, while lim is nil
}

func newKeyedLimiter(perSecond float64, burst, maxKeys int) *keyedLimiter {
	l := &keyedLimiter{limit: rate.Limit(perSecond), burst: burst, perGen: max(1, maxKeys/limiterShards/2), seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].cur = make(map[uint64]limiterSlot)
	}
	return l
}

// allow takes one token from key's bucket at time now.
func (l *keyedLimiter) allow(key string, now time.Time) bool {
	h := maphash.String(l.seed, key)
	s := &l.shards[h%limiterShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	b, seen := s.cur[h]
	if !seen {
		if b, seen = s.old[h]; seen {
			delete(s.old, h)
		}
		if len(s.cur) >= l.perGen {
			s.old, s.cur = s.cur, make(map[uint64]limiterSlot, l.perGen)
		}
	}
	allowed := b.take(l, now, seen)
	s.cur[h] = b
	return allowed
}

// take takes one token at now from the bucket of a key seen before or not.
func (b *limiterSlot) take(l *keyedLimiter, now time.Time, seen bool) bool {
	switch {
	case !seen && l.burst >= 1:
		b.firstNs = now.UnixNano() // a full bucket: the first event is allowed
		return true
	case b.lim == nil:
		b.lim = rate.NewLimiter(l.limit, l.burst)
		if seen {
			b.lim.AllowN(time.Unix(0, b.firstNs), 1) // the first event, at its time
		}
	}
	return b.lim.AllowN(now, 1)
}

// len is the number of buckets held.
func (l *keyedLimiter) len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.cur) + len(s.old)
		s.mu.Unlock()
	}
	return n
}
