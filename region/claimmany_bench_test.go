package region

import (
	"strconv"
	"testing"

	"github.com/tallyhq/tally/store"
)

// BenchmarkClaimMany: claims of 1,000 new users of one video per call
// (claimMany), in a table that holds millions already; ns/claim.
func BenchmarkClaimMany(b *testing.B) {
	tab := newClaimTable(86_400_000, 600_000)
	tab.done = func(uint64) <-chan struct{} { return nil }
	const size = 1000
	keys := make([]store.ClaimKey, size)
	out := make([]claimOutcome, size)
	next := 0
	call := func() {
		for j := range keys {
			keys[j] = store.ClaimKey{Video: "hot", User: "user-" + strconv.Itoa(next), Window: 19792}
			next++
		}
		tab.claimMany(keys, 7, 1_710_000_000_000, 0, out)
	}
	for range 4000 { // 4M claims first
		call()
	}
	b.ResetTimer()
	for range b.N {
		call()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*size), "ns/claim")
}
