package region

import (
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

func TestKeyedLimiterBoundedMemory(t *testing.T) {
	for _, maxKeys := range []int{16, 256, 1000} {
		t.Run(fmt.Sprint(maxKeys), func(t *testing.T) {
			l := newKeyedLimiter(1, 1, maxKeys)
			bound := 2 * l.perGen * limiterShards
			if maxKeys >= 2*limiterShards && bound > maxKeys {
				t.Fatalf("bound %d exceeds RateLimitKeys %d", bound, maxKeys)
			}
			now := t0
			for i := range 20_000 {
				if !l.allow(fmt.Sprint("user-", i), now) {
					t.Fatalf("first view of a new key %d was limited", i)
				}
				if i%500 == 0 {
					if n := l.len(); n > bound {
						t.Fatalf("after %d keys: %d buckets, bound %d", i+1, n, bound)
					}
				}
			}
			if n := l.len(); n > bound || n < bound/2 {
				t.Fatalf("%d buckets after 20000 keys, want in [%d, %d]", n, bound/2, bound)
			}
		})
	}
}

// keysInShard returns n distinct keys that hash to the same shard.
func keysInShard(l *keyedLimiter, n int) []string {
	shard := maphash.String(l.seed, "k0") % limiterShards
	keys := []string{"k0"}
	for i := 1; len(keys) < n; i++ {
		k := fmt.Sprint("k", i)
		if maphash.String(l.seed, k)%limiterShards == shard {
			keys = append(keys, k)
		}
	}
	return keys
}

func TestKeyedLimiterGenerations(t *testing.T) {
	// RateLimitKeys 256: 2 buckets per generation per shard.
	l := newKeyedLimiter(0.001, 1, 4*limiterShards)
	if l.perGen != 2 {
		t.Fatalf("perGen = %d, want 2", l.perGen)
	}
	keys := keysInShard(l, 8)
	hot, now := keys[0], t0
	if !l.allow(hot, now) || l.allow(hot, now) {
		t.Fatal("burst 1: want one view allowed, then limited")
	}
	// hot in cur; k1 fills cur; k2 moves {hot, k1} to old.
	l.allow(keys[1], now)
	l.allow(keys[2], now)
	if l.allow(hot, now) {
		t.Fatal("a key seen in the previous generation lost its bucket")
	}
	// hot came back to cur: {k2, hot}. Two more generations without it...
	l.allow(keys[3], now) // rotate: old {k2, hot}, cur {k3}
	l.allow(keys[4], now) // cur {k3, k4}
	l.allow(keys[5], now) // rotate: old {k3, k4}, cur {k5}: hot dropped
	if !l.allow(hot, now) {
		t.Fatal("a key not seen for two generations kept its empty bucket")
	}
}

func TestKeyedLimiterRefill(t *testing.T) {
	l := newKeyedLimiter(2, 3, 1024) // 2 per second, burst 3
	now := t0
	allowed := 0
	for range 10 {
		if l.allow("u", now) {
			allowed++
		}
	}
	if allowed != 3 {
		t.Fatalf("%d allowed at once, want the burst of 3", allowed)
	}
	now = now.Add(1100 * time.Millisecond) // 2.2 tokens
	allowed = 0
	for range 10 {
		if l.allow("u", now) {
			allowed++
		}
	}
	if allowed != 2 {
		t.Fatalf("%d allowed after 1.1 s at 2/s, want 2", allowed)
	}
	if !l.allow("other", now) {
		t.Fatal("another key shares the bucket")
	}
}

// TestKeyedLimiterMatchesPerKeyLimiters: a key's bucket, made lazily on its
// second event, decides every event as a rate.Limiter made at its first
// event would, for bursts of 0, 1 and 3 and events at random times.
func TestKeyedLimiterMatchesPerKeyLimiters(t *testing.T) {
	for _, burst := range []int{0, 1, 3} {
		rng := rand.New(rand.NewPCG(uint64(burst), 9))
		l := newKeyedLimiter(2, burst, 1<<20) // no generation ever drops a key
		ref := map[string]*rate.Limiter{}
		now := t0
		for i := range 5_000 {
			// Mostly a few busy keys (each event a fraction of a token
			// after the last), and now and then a new key seen once.
			now = now.Add(time.Duration(rng.IntN(120)) * time.Millisecond)
			key := fmt.Sprint("user-", rng.IntN(5))
			if rng.IntN(10) == 0 {
				key = fmt.Sprint("once-", i)
			}
			r := ref[key]
			if r == nil {
				r = rate.NewLimiter(2, burst)
				ref[key] = r
			}
			if got, want := l.allow(key, now), r.AllowN(now, 1); got != want {
				t.Fatalf("burst %d, event %d (%s at %v): allowed %v, a per-key limiter says %v", burst, i, key, now.Sub(t0), got, want)
			}
		}
	}
}
