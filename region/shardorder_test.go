package region

import (
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// TestShardOrder: shardOrder lists every index once, grouped by shard in
// shard order, keeping the order of the indexes of one shard, and eachRun
// hands over each shard's run of them; prefault leaves a table zero.
func TestShardOrder(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		shards := rapid.IntRange(1, 40).Draw(rt, "shards")
		of := rapid.SliceOfN(rapid.IntRange(0, shards-1), 0, 200).Draw(rt, "shard of each index")
		ends := make([]int32, shards)
		order := shardOrder(rapid.SliceOfN(rapid.Int32(), 0, 5).Draw(rt, "dst"), ends, len(of), func(i int) int { return of[i] })
		var want []int32
		for s := range shards {
			for i, si := range of {
				if si == s {
					want = append(want, int32(i))
				}
			}
		}
		if !slices.Equal(order, want) {
			rt.Fatalf("order %v, want %v", order, want)
		}
		var got []int32
		last := -1
		eachRun(order, ends, func(s int, run []int32) {
			if s <= last || len(run) == 0 {
				rt.Fatalf("run of shard %d after shard %d, %d long", s, last, len(run))
			}
			last = s
			for _, i := range run {
				if of[i] != s {
					rt.Fatalf("index %d of shard %d in the run of shard %d", i, of[i], s)
				}
			}
			got = append(got, run...)
		})
		if !slices.Equal(got, want) {
			rt.Fatalf("runs %v, want %v", got, want)
		}
	})
	entries := make([]claimEntry, 1000)
	prefault(entries)
	if slices.ContainsFunc(entries, func(e claimEntry) bool { return e != claimEntry{} }) {
		t.Fatal("prefault changed a table of zeros")
	}
}
