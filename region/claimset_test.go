package region

import (
	"math/rand/v2"
	"testing"
)

// TestClaimSetMatchesMap: a claimSet answers as a map would, through
// growth, and for IDs that all start their probe at the same place.
func TestClaimSetMatchesMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 7))
	for _, collide := range []bool{false, true} {
		var set claimSet
		ref := map[[2]uint64]claimSlot{}
		var ids [][2]uint64
		for i := range 5000 {
			id := [2]uint64{rng.Uint64(), rng.Uint64() | 1}
			if collide && i < 300 {
				id[1] = 1<<40 | 1 // one home for all, in every table size
			}
			if len(ids) > 0 && rng.IntN(3) == 0 {
				id = ids[rng.IntN(len(ids))] // one seen before
			}
			p, found := set.ref(id)
			want, seen := ref[id]
			if found != seen || *p != want {
				t.Fatalf("ref %d (%x): found %v %+v, want %v %+v", i, id, found, *p, seen, want)
			}
			if !seen {
				ids = append(ids, id)
			}
			*p = claimSlot{replica: 7, ingestMs: int64(i), batch: uint64(i % 5)}
			ref[id] = *p
		}
		if set.n != len(ref) || 4*set.n > 3*len(set.entries) {
			t.Fatalf("%d entries in a table of %d, want %d at most 3/4 full", set.n, len(set.entries), len(ref))
		}
		for id, want := range ref {
			if got, ok := set.get(id); !ok || got != want {
				t.Fatalf("get %x: %+v %v, want %+v", id, got, ok, want)
			}
		}
		if _, ok := set.get([2]uint64{rng.Uint64(), rng.Uint64() | 1}); ok {
			t.Fatal("an ID never added was found")
		}
	}
	var empty claimSet
	if _, ok := empty.get([2]uint64{1, 1}); ok {
		t.Fatal("an empty set found an ID")
	}
}
