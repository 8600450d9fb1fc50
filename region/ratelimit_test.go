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
	for _, maxKeys := range []int{16, 256, 1000, 1 << 14} {
		t.Run(fmt.Sprint(maxKeys), func(t *testing.T) {
			l := newKeyedLimiter(1, 1, maxKeys)
			bound := l.bound()
			if maxKeys >= 4*limiterShards && bound > maxKeys {
				t.Fatalf("bound %d exceeds RateLimitKeys %d", bound, maxKeys)
			}
			now := t0
			for i := range 20_000 {
				key := fmt.Sprint("user-", i)
				if !l.allow(key, now) {
					t.Fatalf("first view of a new key %d was limited", i)
				}
				if i%3 == 0 {
					l.allow(key, now) // a third of the keys come back: buckets
				}
				if i%500 == 0 {
					if n := l.len(); n > bound {
						t.Fatalf("after %d keys: %d held, bound %d", i+1, n, bound)
					}
				}
			}
			if n := l.len(); n > bound || n < bound/2 {
				t.Fatalf("%d keys held after 20000, want in [%d, %d]", n, bound/2, bound)
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
	// RateLimitKeys 256: per shard, one bucket per generation and one set
	// of two first-seen records.
	l := newKeyedLimiter(0.001, 1, 4*limiterShards)
	if l.perGen != 1 || l.firstSets != 1 || l.bound() != 4*limiterShards {
		t.Fatalf("perGen %d, firstSets %d, bound %d; want 1, 1, 256", l.perGen, l.firstSets, l.bound())
	}
	keys := keysInShard(l, 8)
	hot, now := keys[0], t0
	if !l.allow(hot, now) || l.allow(hot, now) {
		t.Fatal("burst 1: want one view allowed, then limited")
	}
	twice := func(k string) { l.allow(k, now); l.allow(k, now) }
	// hot has its bucket in cur; k1's moves it to old.
	twice(keys[1])
	if l.allow(hot, now) {
		t.Fatal("a key seen in the previous generation lost its bucket")
	}
	// hot came back to cur: {hot}, old {k1}. Two more generations without it...
	twice(keys[2]) // old {hot}, cur {k2}
	twice(keys[3]) // old {k2}, cur {k3}: hot dropped
	if !l.allow(hot, now) {
		t.Fatal("a key not seen for two generations kept its empty bucket")
	}
}

// TestKeyedLimiterFirstSeen: a key seen once is remembered until two later
// new keys of its set take both records, the older going first; then it
// starts again with a full bucket.
func TestKeyedLimiterFirstSeen(t *testing.T) {
	l := newKeyedLimiter(0.001, 1, 4*limiterShards) // one set of two records per shard
	keys := keysInShard(l, 3)
	a, b, c := keys[0], keys[1], keys[2]
	for i, k := range []string{a, b, c} {
		if !l.allow(k, t0.Add(time.Duration(i)*time.Millisecond)) {
			t.Fatalf("first view of %s limited", k)
		}
	}
	now := t0.Add(time.Second)
	if l.allow(b, now) {
		t.Fatal("b's record was kept: its second view at burst 1 should be limited")
	}
	if !l.allow(a, now) {
		t.Fatal("a's record should have gone (the oldest of its set): a starts again with a full bucket")
	}
	if n := l.len(); n != 3 {
		t.Fatalf("%d keys held, want 3 (a's new record, c's, and b's bucket)", n)
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
