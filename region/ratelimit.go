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

type limiterShard struct {
	mu       sync.Mutex // protects cur and old
	cur, old map[string]*rate.Limiter
}

func newKeyedLimiter(perSecond float64, burst, maxKeys int) *keyedLimiter {
	l := &keyedLimiter{limit: rate.Limit(perSecond), burst: burst, perGen: max(1, maxKeys/limiterShards/2), seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].cur = make(map[string]*rate.Limiter)
	}
	return l
}

// allow takes one token from key's bucket at time now.
func (l *keyedLimiter) allow(key string, now time.Time) bool {
	s := &l.shards[maphash.String(l.seed, key)%limiterShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.cur[key]
	if !ok {
		if b, ok = s.old[key]; ok {
			delete(s.old, key)
		} else {
			b = rate.NewLimiter(l.limit, l.burst)
		}
		if len(s.cur) >= l.perGen {
			s.old, s.cur = s.cur, make(map[string]*rate.Limiter, l.perGen)
		}
		s.cur[key] = b
	}
	return b.AllowN(now, 1)
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
