package sim

import (
	"math"
	"math/bits"
	"time"
)

// rng is a small deterministic PRNG (xoshiro256**, seeded by splitmix64),
// hand-written rather than math/rand/v2 so that the integer sequence of a
// seed is fixed by this file alone, whatever the Go release.
type rng struct{ s [4]uint64 }

func splitmix(x *uint64) uint64 {
	*x += 0x9e3779b97f4a7c15
	z := *x
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func newRNG(seed uint64) *rng {
	r := &rng{}
	x := seed
	for i := range r.s {
		r.s[i] = splitmix(&x)
	}
	return r
}

// subSeed derives the seed of one subsystem from the run's seed, so that
// adding draws to one subsystem (say the workload) does not shift every
// other subsystem's sequence.
func subSeed(seed uint64, name string) uint64 {
	h := uint64(14695981039346656037) // FNV-1a
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= 1099511628211
	}
	x := seed ^ h
	return splitmix(&x)
}

func rotl(x uint64, k uint) uint64 { return (x << k) | (x >> (64 - k)) }

func (r *rng) Uint64() uint64 {
	s := &r.s
	out := rotl(s[1]*5, 7) * 9
	t := s[1] << 17
	s[2] ^= s[0]
	s[3] ^= s[1]
	s[1] ^= s[2]
	s[0] ^= s[3]
	s[2] ^= t
	s[3] = rotl(s[3], 45)
	return out
}

// Intn returns a uniform int in [0, n); n > 0.
func (r *rng) Intn(n int) int {
	if n <= 0 {
		panic("sim: Intn of non-positive n")
	}
	// Lemire's multiply-shift without the rejection step: the bias is below
	// 2^-40 for the small n used here, and the sequence stays one draw per call.
	hi, _ := bits.Mul64(r.Uint64(), uint64(n))
	return int(hi)
}

// Float64 returns a uniform float in [0, 1).
func (r *rng) Float64() float64 { return float64(r.Uint64()>>11) / (1 << 53) }

// Chance reports true with probability p.
func (r *rng) Chance(p float64) bool { return p > 0 && r.Float64() < p }

// Between returns a uniform duration in [lo, hi], rounded to microseconds so
// that printed times stay short.
func (r *rng) Between(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	span := int64(hi-lo) / int64(time.Microsecond)
	return lo + time.Duration(r.Intn(int(span)+1))*time.Microsecond
}

// Exp returns an exponentially distributed duration with the given mean,
// capped at 20 means (a long tail, but never an absurd one), in microseconds.
func (r *rng) Exp(mean time.Duration) time.Duration {
	if mean <= 0 {
		return 0
	}
	u := r.Float64()
	d := -math.Log(1-u) * float64(mean)
	d = math.Min(d, 20*float64(mean))
	return time.Duration(d).Round(time.Microsecond)
}

// Perm returns a random permutation of [0, n).
func (r *rng) Perm(n int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	for i := n - 1; i > 0; i-- {
		j := r.Intn(i + 1)
		p[i], p[j] = p[j], p[i]
	}
	return p
}
