package crdt_test

import (
	"bytes"
	"math"
	"slices"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
	"pgregory.net/rapid"

	"github.com/tallyhq/tally/crdt"
)

// Generators.
//
// Replica IDs come from a small pool so that slots of independently drawn
// states collide (which is where merge does its work). The pool also holds a
// few extreme IDs. Some counters draw from a wider pool so that they reach
// more than 8 slots, the size at which GCounter switches from a linear scan to
// binary search.

var replicaPool = []crdt.ReplicaID{
	1, 2, 3, 4, 5,
	0, 1 << 32, 1 << 63, math.MaxUint64 - 1, math.MaxUint64,
}

func genReplica() *rapid.Generator[crdt.ReplicaID] {
	return rapid.OneOf(
		rapid.SampledFrom(replicaPool[:5]), // mostly the small pool: collisions
		rapid.SampledFrom(replicaPool[:5]),
		rapid.SampledFrom(replicaPool),
	)
}

// genWideReplica draws from 1..24 and the extreme IDs: still colliding, but
// enough distinct IDs for counters of 9-20 slots.
func genWideReplica() *rapid.Generator[crdt.ReplicaID] {
	return rapid.OneOf(
		rapid.Map(rapid.Uint64Range(1, 24), func(v uint64) crdt.ReplicaID { return crdt.ReplicaID(v) }),
		rapid.SampledFrom(replicaPool),
	)
}

func genCount() *rapid.Generator[uint64] {
	return rapid.OneOf(
		rapid.Uint64Range(0, 10),
		rapid.Uint64Range(0, 1<<20),
		rapid.Uint64Range(math.MaxUint64-10, math.MaxUint64),
		rapid.Uint64Range(math.MaxUint64/2-5, math.MaxUint64/2+5),
		rapid.Uint64(),
	)
}

const epochMs = 1_700_000_000_000

func genTime() *rapid.Generator[int64] {
	return rapid.OneOf(
		rapid.Int64Range(-3, 10), // negative times are clamped to 0 by the API
		rapid.Int64Range(epochMs, epochMs+1000),
		rapid.Int64Range(math.MaxInt64-10, math.MaxInt64),
		rapid.Int64Min(0),
	)
}

func genSlot() *rapid.Generator[crdt.Slot] { return genSlotFrom(genReplica()) }

func genSlotFrom(replica *rapid.Generator[crdt.ReplicaID]) *rapid.Generator[crdt.Slot] {
	return rapid.Custom(func(t *rapid.T) crdt.Slot {
		return crdt.Slot{
			Replica: replica.Draw(t, "replica"),
			Count:   genCount().Draw(t, "count"),
			Updated: genTime().Draw(t, "updated"),
		}
	})
}

type op struct {
	replica crdt.ReplicaID
	n       uint64
	nowMs   int64
}

func genOp() *rapid.Generator[op] {
	return rapid.Custom(func(t *rapid.T) op {
		return op{
			replica: genReplica().Draw(t, "replica"),
			n:       genCount().Draw(t, "n"),
			nowMs:   genTime().Draw(t, "now"),
		}
	})
}

// genGCounter builds counters both from raw slots (any order, duplicates,
// bottom slots) and by a sequence of increments on top of that.
func genGCounter() *rapid.Generator[crdt.GCounter] {
	return rapid.Custom(func(t *rapid.T) crdt.GCounter {
		slots := rapid.OneOf(
			rapid.SliceOfN(genSlot(), 0, 12),
			rapid.SliceOfN(genSlot(), 0, 12),
			rapid.SliceOfN(genSlotFrom(genWideReplica()), 6, 24),
		).Draw(t, "slots")
		g := crdt.NewGCounter(slots...)
		for _, o := range rapid.SliceOfN(genOp(), 0, 4).Draw(t, "ops") {
			g.Increment(o.replica, o.n, o.nowMs)
		}
		return g
	})
}

func genPNCounter() *rapid.Generator[crdt.PNCounter] {
	return rapid.Custom(func(t *rapid.T) crdt.PNCounter {
		return crdt.PNCounter{
			P: genGCounter().Draw(t, "P"),
			N: genGCounter().Draw(t, "N"),
		}
	})
}

// Helpers: merges on clones, so that inputs are never mutated.

func gJoin(gs ...crdt.GCounter) crdt.GCounter {
	var out crdt.GCounter
	for _, g := range gs {
		out.Merge(g)
	}
	return out
}

func pnJoin(cs ...crdt.PNCounter) crdt.PNCounter {
	var out crdt.PNCounter
	for _, c := range cs {
		out.Merge(c)
	}
	return out
}

// checkInvariants asserts the representation invariants visible through the
// public API: slots strictly sorted by replica, no bottom slot, no negative time.
func checkInvariants(t rapid.TB, name string, g crdt.GCounter) {
	t.Helper()
	s := g.Slots()
	if len(s) != g.Len() {
		t.Fatalf("%s: Len %d != len(Slots) %d", name, g.Len(), len(s))
	}
	for i, sl := range s {
		if i > 0 && s[i-1].Replica >= sl.Replica {
			t.Fatalf("%s: slots not strictly sorted: %v", name, g)
		}
		if sl.Count == 0 && sl.Updated == 0 {
			t.Fatalf("%s: bottom slot stored: %v", name, g)
		}
		if sl.Updated < 0 {
			t.Fatalf("%s: negative time stored: %v", name, g)
		}
		if got := g.Get(sl.Replica); got != sl {
			t.Fatalf("%s: Get(%v) = %+v, want %+v", name, sl.Replica, got, sl)
		}
	}
}

// ---- GCounter ----

func TestGCounterGeneratedStatesAreWellFormed(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		g := genGCounter().Draw(t, "g")
		checkInvariants(t, "g", g)
	})
}

func TestGCounterNewIsMergeOfSlots(t *testing.T) {
	// NewGCounter takes slots in any order; it must equal folding them in one
	// at a time, in any permutation.
	rapid.Check(t, func(t *rapid.T) {
		slots := rapid.SliceOfN(genSlot(), 0, 12).Draw(t, "slots")
		perm := rapid.Permutation(slots).Draw(t, "perm")
		a := crdt.NewGCounter(slots...)
		b := crdt.NewGCounter(perm...)
		if !a.Equal(b) {
			t.Fatalf("order matters: %v vs %v", a, b)
		}
		var c crdt.GCounter
		for _, s := range slots {
			c.Merge(crdt.NewGCounter(s))
		}
		if !a.Equal(c) {
			t.Fatalf("NewGCounter %v != merged %v", a, c)
		}
		checkInvariants(t, "a", a)
		for _, s := range slots {
			want := crdt.Slot{Replica: s.Replica, Count: s.Count, Updated: max(s.Updated, 0)}
			got := a.Get(s.Replica)
			if got.Count < want.Count || got.Updated < want.Updated {
				t.Fatalf("slot %+v not covered by %+v", want, got)
			}
		}
	})
}

func TestGCounterMergeCommutative(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a := genGCounter().Draw(t, "a")
		b := genGCounter().Draw(t, "b")
		ab, ba := a.Clone(), b.Clone()
		ab.Merge(b)
		ba.Merge(a)
		if !ab.Equal(ba) {
			t.Fatalf("a⊔b = %v, b⊔a = %v", ab, ba)
		}
		if ab.Value() != ba.Value() {
			t.Fatalf("values differ: %d vs %d", ab.Value(), ba.Value())
		}
		checkInvariants(t, "a⊔b", ab)
	})
}

func TestGCounterMergeAssociative(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a := genGCounter().Draw(t, "a")
		b := genGCounter().Draw(t, "b")
		c := genGCounter().Draw(t, "c")
		left := gJoin(gJoin(a, b), c)
		right := gJoin(a, gJoin(b, c))
		if !left.Equal(right) {
			t.Fatalf("(a⊔b)⊔c = %v, a⊔(b⊔c) = %v", left, right)
		}
	})
}

func TestGCounterMergeIdempotent(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a := genGCounter().Draw(t, "a")
		x := a.Clone()
		if x.Merge(a) {
			t.Fatalf("a⊔a reported a change")
		}
		if !x.Equal(a) {
			t.Fatalf("a⊔a = %v, want %v", x, a)
		}
		// Merging a value into itself (same backing array) changes nothing.
		if x.Merge(x) || !x.Equal(a) {
			t.Fatalf("x.Merge(x) changed x: %v", x)
		}
		// Merging the empty counter changes nothing either way.
		var empty crdt.GCounter
		if x.Merge(empty) || !x.Equal(a) {
			t.Fatalf("a⊔⊥ changed a")
		}
		if e := (crdt.GCounter{}); e.Merge(a) != (a.Len() > 0) || !e.Equal(a) {
			t.Fatalf("⊥⊔a = %v, want %v", e, a)
		}
	})
}

func TestGCounterMergeMonotone(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a := genGCounter().Draw(t, "a")
		b := genGCounter().Draw(t, "b")
		ab := gJoin(a, b)
		if !ab.Covers(a) || !ab.Covers(b) {
			t.Fatalf("a⊔b = %v does not cover both a = %v and b = %v", ab, a, b)
		}
		if ab.Value() < a.Value() || ab.Value() < b.Value() {
			t.Fatalf("value went down: %d ⊔ %d = %d", a.Value(), b.Value(), ab.Value())
		}
		if ab.LastUpdated() != max(a.LastUpdated(), b.LastUpdated()) {
			t.Fatalf("LastUpdated %d, want max(%d, %d)", ab.LastUpdated(), a.LastUpdated(), b.LastUpdated())
		}
		// a⊔b is the least upper bound: slot by slot the max of both.
		for _, s := range ab.Slots() {
			x, y := a.Get(s.Replica), b.Get(s.Replica)
			if s.Count != max(x.Count, y.Count) || s.Updated != max(x.Updated, y.Updated) {
				t.Fatalf("slot %+v is not the max of %+v and %+v", s, x, y)
			}
		}
		// Covers is exactly "merging changes nothing".
		if a.Covers(b) != gJoin(a, b).Equal(a) {
			t.Fatalf("Covers(%v, %v) = %v disagrees with merge", a, b, a.Covers(b))
		}
	})
}

func TestGCounterMergeChangedFlag(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a := genGCounter().Draw(t, "a")
		b := genGCounter().Draw(t, "b")
		x := a.Clone()
		changed := x.Merge(b)
		if changed == x.Equal(a) {
			t.Fatalf("Merge reported changed=%v, but before %v after %v", changed, a, x)
		}
		if changed == a.Covers(b) {
			t.Fatalf("changed=%v but a.Covers(b)=%v", changed, a.Covers(b))
		}
	})
}

func TestGCounterMergeDoesNotMutateArgument(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a := genGCounter().Draw(t, "a")
		b := genGCounter().Draw(t, "b")
		bSnap := b.Slots()
		x := a.Clone()
		x.Merge(b)
		x.Increment(genReplica().Draw(t, "r"), 1, epochMs)
		if !slices.Equal(b.Slots(), bSnap) {
			t.Fatalf("merge source changed: %v, was %v", b.Slots(), bSnap)
		}
	})
}

func TestGCounterConvergence(t *testing.T) {
	// Replicas that receive the same states in any order, with duplicates,
	// converge to the same state.
	rapid.Check(t, func(t *rapid.T) {
		states := rapid.SliceOfN(genGCounter(), 1, 6).Draw(t, "states")
		want := gJoin(states...)
		delivered := append(slices.Clone(states), rapid.SliceOfN(rapid.SampledFrom(states), 0, 4).Draw(t, "dups")...)
		got := gJoin(rapid.Permutation(delivered).Draw(t, "order")...)
		if !got.Equal(want) {
			t.Fatalf("diverged: %v vs %v", got, want)
		}
	})
}

func TestGCounterDeltaLaw(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a := genGCounter().Draw(t, "a")
		since := rapid.OneOf(
			genGCounter(),
			// a state a has already moved past: the usual case for deltas
			rapid.Custom(func(t *rapid.T) crdt.GCounter {
				return crdt.NewGCounter(rapid.SliceOfN(rapid.SampledFrom(append(a.Slots(), crdt.Slot{Replica: 1, Count: 1})), 0, 5).Draw(t, "sub")...)
			}),
		).Draw(t, "since")

		d := a.Delta(since)
		viaDelta := gJoin(since, d)
		viaFull := gJoin(since, a)
		if !viaDelta.Equal(viaFull) {
			t.Fatalf("since⊔Δ = %v, since⊔a = %v (Δ = %v)", viaDelta, viaFull, d)
		}
		checkInvariants(t, "delta", d)
		// Δ is part of a, and holds only slots since is behind on.
		if !a.Covers(d) {
			t.Fatalf("a = %v does not cover Δ = %v", a, d)
		}
		for _, s := range d.Slots() {
			if s != a.Get(s.Replica) {
				t.Fatalf("Δ slot %+v is not a's slot %+v", s, a.Get(s.Replica))
			}
			if since.Covers(crdt.NewGCounter(s)) {
				t.Fatalf("Δ holds slot %+v that since already covers", s)
			}
		}
		// Minimality: every slot of a left out of Δ is already covered by since.
		for _, s := range a.Slots() {
			if d.Get(s.Replica) == (crdt.Slot{Replica: s.Replica}) && !since.Covers(crdt.NewGCounter(s)) {
				t.Fatalf("slot %+v missing from Δ = %v", s, d)
			}
		}
		if got := a.Delta(a); got.Len() != 0 {
			t.Fatalf("a.Delta(a) = %v, want empty", got)
		}
		if got := a.Delta(gJoin(a, since)); got.Len() != 0 {
			t.Fatalf("a.Delta(a⊔since) = %v, want empty", got)
		}
		if got := a.Delta(crdt.GCounter{}); !got.Equal(a) {
			t.Fatalf("a.Delta(⊥) = %v, want a = %v", got, a)
		}
	})
}

func TestGCounterIncrementMonotone(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		g := genGCounter().Draw(t, "g")
		o := genOp().Draw(t, "op")
		before := g.Clone()
		g.Increment(o.replica, o.n, o.nowMs)
		checkInvariants(t, "after", g)
		if !g.Covers(before) {
			t.Fatalf("increment shrank state: %v -> %v", before, g)
		}
		if g.Value() < before.Value() {
			t.Fatalf("value went down: %d -> %d", before.Value(), g.Value())
		}
		old, now := before.Get(o.replica), g.Get(o.replica)
		wantCount := old.Count + o.n
		if wantCount < old.Count { // overflow: saturate
			wantCount = math.MaxUint64
		}
		if now.Count != wantCount {
			t.Fatalf("count %d + %d = %d, want %d", old.Count, o.n, now.Count, wantCount)
		}
		if now.Updated != max(old.Updated, o.nowMs, 0) {
			t.Fatalf("updated %d after increment at %d (was %d)", now.Updated, o.nowMs, old.Updated)
		}
		// Other slots are untouched.
		for _, s := range before.Slots() {
			if s.Replica != o.replica && g.Get(s.Replica) != s {
				t.Fatalf("slot %v changed: %+v -> %+v", s.Replica, s, g.Get(s.Replica))
			}
		}
		if g.Len() > before.Len()+1 {
			t.Fatalf("increment added more than one slot")
		}
	})
}

func TestGCounterValueIsSaturatingSum(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		g := genGCounter().Draw(t, "g")
		var sum uint64
		overflow := false
		for _, s := range g.Slots() {
			if sum+s.Count < sum {
				overflow = true
			}
			sum += s.Count
		}
		want := sum
		if overflow {
			want = math.MaxUint64
		}
		if g.Value() != want {
			t.Fatalf("Value() = %d, want %d for %v", g.Value(), want, g)
		}
	})
}

func TestGCounterCloneIsDeep(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		g := genGCounter().Draw(t, "g")
		snap := g.Slots()
		c := g.Clone()
		if !c.Equal(g) {
			t.Fatalf("clone %v != %v", c, g)
		}
		for _, r := range replicaPool {
			c.Increment(r, 1, math.MaxInt64)
		}
		if !slices.Equal(g.Slots(), snap) {
			t.Fatalf("mutating the clone changed the original: %v", g)
		}
	})
}

func TestGCounterMsgpackRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		g := genGCounter().Draw(t, "g")
		b, err := msgpack.Marshal(g)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		var back crdt.GCounter
		if err := msgpack.Unmarshal(b, &back); err != nil {
			t.Fatalf("unmarshal %x: %v", b, err)
		}
		if !back.Equal(g) {
			t.Fatalf("round trip: %v -> %v", g, back)
		}
		// Canonical: the same state built another way encodes identically.
		other := crdt.NewGCounter(rapid.Permutation(g.Slots()).Draw(t, "perm")...)
		b2, err := msgpack.Marshal(other)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		if !bytes.Equal(b, b2) {
			t.Fatalf("equal states, different bytes: %x vs %x", b, b2)
		}
	})
}

// ---- PNCounter ----

func TestPNCounterMergeCommutative(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a := genPNCounter().Draw(t, "a")
		b := genPNCounter().Draw(t, "b")
		ab, ba := a.Clone(), b.Clone()
		ab.Merge(b)
		ba.Merge(a)
		if !ab.Equal(ba) {
			t.Fatalf("a⊔b = %v, b⊔a = %v", ab, ba)
		}
		if ab.Value() != ba.Value() {
			t.Fatalf("values differ: %d vs %d", ab.Value(), ba.Value())
		}
	})
}

func TestPNCounterMergeAssociative(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a := genPNCounter().Draw(t, "a")
		b := genPNCounter().Draw(t, "b")
		c := genPNCounter().Draw(t, "c")
		left := pnJoin(pnJoin(a, b), c)
		right := pnJoin(a, pnJoin(b, c))
		if !left.Equal(right) {
			t.Fatalf("(a⊔b)⊔c = %v, a⊔(b⊔c) = %v", left, right)
		}
	})
}

func TestPNCounterMergeIdempotent(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a := genPNCounter().Draw(t, "a")
		x := a.Clone()
		if x.Merge(a) {
			t.Fatalf("a⊔a reported a change")
		}
		if !x.Equal(a) {
			t.Fatalf("a⊔a = %v, want %v", x, a)
		}
		if x.Merge(crdt.PNCounter{}) || !x.Equal(a) {
			t.Fatalf("a⊔⊥ changed a")
		}
	})
}

func TestPNCounterMergeMonotone(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a := genPNCounter().Draw(t, "a")
		b := genPNCounter().Draw(t, "b")
		ab := pnJoin(a, b)
		if !ab.Covers(a) || !ab.Covers(b) {
			t.Fatalf("a⊔b = %v does not cover a = %v and b = %v", ab, a, b)
		}
		// The total shown may go down (a decrement arrives), but P and N each
		// only grow.
		for _, x := range []crdt.PNCounter{a, b} {
			if ab.P.Value() < x.P.Value() || ab.N.Value() < x.N.Value() {
				t.Fatalf("P or N went down: %v ⊔ ... = %v", x, ab)
			}
		}
		if !ab.P.Equal(gJoin(a.P, b.P)) || !ab.N.Equal(gJoin(a.N, b.N)) {
			t.Fatalf("PN merge is not the merge of P and of N")
		}
		if ab.LastUpdated() != max(a.LastUpdated(), b.LastUpdated()) {
			t.Fatalf("LastUpdated %d, want max(%d, %d)", ab.LastUpdated(), a.LastUpdated(), b.LastUpdated())
		}
		if a.Covers(b) != pnJoin(a, b).Equal(a) {
			t.Fatalf("Covers disagrees with merge")
		}
	})
}

func TestPNCounterMergeChangedFlag(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a := genPNCounter().Draw(t, "a")
		b := genPNCounter().Draw(t, "b")
		x := a.Clone()
		changed := x.Merge(b)
		if changed == x.Equal(a) {
			t.Fatalf("Merge reported changed=%v, but before %v after %v", changed, a, x)
		}
		if changed == a.Covers(b) {
			t.Fatalf("changed=%v but a.Covers(b)=%v", changed, a.Covers(b))
		}
	})
}

func TestPNCounterConvergence(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		states := rapid.SliceOfN(genPNCounter(), 1, 5).Draw(t, "states")
		want := pnJoin(states...)
		delivered := append(slices.Clone(states), rapid.SliceOfN(rapid.SampledFrom(states), 0, 3).Draw(t, "dups")...)
		got := pnJoin(rapid.Permutation(delivered).Draw(t, "order")...)
		if !got.Equal(want) || got.Value() != want.Value() {
			t.Fatalf("diverged: %v vs %v", got, want)
		}
	})
}

func TestPNCounterDeltaLaw(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a := genPNCounter().Draw(t, "a")
		since := genPNCounter().Draw(t, "since")
		if rapid.Bool().Draw(t, "sinceIsOlder") {
			// since is an older version of a: a's state minus its latest ops.
			since = crdt.PNCounter{
				P: crdt.NewGCounter(rapid.SliceOfN(rapid.SampledFrom(append(a.P.Slots(), crdt.Slot{Replica: 2, Count: 1})), 0, 4).Draw(t, "p")...),
				N: crdt.NewGCounter(rapid.SliceOfN(rapid.SampledFrom(append(a.N.Slots(), crdt.Slot{Replica: 3, Count: 1})), 0, 4).Draw(t, "n")...),
			}
		}
		d := a.Delta(since)
		if got, want := pnJoin(since, d), pnJoin(since, a); !got.Equal(want) {
			t.Fatalf("since⊔Δ = %v, since⊔a = %v", got, want)
		}
		if !a.Covers(d) {
			t.Fatalf("Δ = %v not part of a = %v", d, a)
		}
		if got := a.Delta(a); !got.IsZero() {
			t.Fatalf("a.Delta(a) = %v, want empty", got)
		}
		if got := a.Delta(crdt.PNCounter{}); !got.Equal(a) {
			t.Fatalf("a.Delta(⊥) = %v, want %v", got, a)
		}
	})
}

func TestPNCounterIncrementDecrementMonotone(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := genPNCounter().Draw(t, "c")
		ops := rapid.SliceOfN(genOp(), 1, 6).Draw(t, "ops")
		for i, o := range ops {
			before := c.Clone()
			dec := rapid.Bool().Draw(t, "dec")
			if dec {
				c.Decrement(o.replica, o.n, o.nowMs)
			} else {
				c.Increment(o.replica, o.n, o.nowMs)
			}
			if !c.Covers(before) {
				t.Fatalf("op %d shrank state: %v -> %v", i, before, c)
			}
			// Increment touches only P, Decrement only N.
			if dec && !c.P.Equal(before.P) || !dec && !c.N.Equal(before.N) {
				t.Fatalf("op %d (dec=%v) touched the wrong half: %v -> %v", i, dec, before, c)
			}
			if !dec && c.Value() < before.Value() {
				t.Fatalf("increment lowered value: %d -> %d", before.Value(), c.Value())
			}
			if dec && c.Value() > before.Value() {
				t.Fatalf("decrement raised value: %d -> %d", before.Value(), c.Value())
			}
		}
	})
}

func TestPNCounterValue(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := genPNCounter().Draw(t, "c")
		p, n := c.P.Value(), c.N.Value()
		var want uint64
		if p >= n {
			want = p - n
		}
		if c.Value() != want {
			t.Fatalf("Value() = %d, want P %d − N %d clamped = %d", c.Value(), p, n, want)
		}
		if c.IsZero() != (c.P.Len() == 0 && c.N.Len() == 0) {
			t.Fatalf("IsZero wrong for %v", c)
		}
	})
}

func TestPNCounterContributionsProperty(t *testing.T) {
	// With small counts (no saturation), per-replica contributions add up to
	// at least the value, and to exactly the value when no replica's N is
	// ahead of its P.
	small := rapid.Custom(func(t *rapid.T) crdt.GCounter {
		var g crdt.GCounter
		for _, o := range rapid.SliceOfN(genOp(), 0, 8).Draw(t, "ops") {
			g.Increment(o.replica, o.n%1000, o.nowMs)
		}
		return g
	})
	rapid.Check(t, func(t *rapid.T) {
		c := crdt.PNCounter{P: small.Draw(t, "P"), N: small.Draw(t, "N")}
		contrib := c.Contributions()
		var sum uint64
		balanced := true
		for r, v := range contrib {
			p, n := c.P.Get(r).Count, c.N.Get(r).Count
			if p < n {
				balanced = false
				if v != 0 {
					t.Fatalf("replica %v: P %d < N %d but contribution %d", r, p, n, v)
				}
			} else if v != p-n {
				t.Fatalf("replica %v: contribution %d, want %d", r, v, p-n)
			}
			sum += v
		}
		for _, s := range append(c.P.Slots(), c.N.Slots()...) {
			if _, ok := contrib[s.Replica]; !ok {
				t.Fatalf("replica %v missing from contributions %v", s.Replica, contrib)
			}
		}
		if len(contrib) > c.P.Len()+c.N.Len() {
			t.Fatalf("contributions name replicas with no slot: %v", contrib)
		}
		if sum < c.Value() || balanced && sum != c.Value() {
			t.Fatalf("contributions sum %d, value %d, balanced %v", sum, c.Value(), balanced)
		}
	})
}

func TestPNCounterEncodingRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := genPNCounter().Draw(t, "c")
		b, err := c.MarshalBinary()
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		var back crdt.PNCounter
		if err := back.UnmarshalBinary(b); err != nil {
			t.Fatalf("unmarshal %x: %v", b, err)
		}
		if !back.Equal(c) || back.Value() != c.Value() {
			t.Fatalf("round trip: %v -> %v", c, back)
		}
		// Decoding replaces, it does not merge into, the receiver.
		into := genPNCounter().Draw(t, "into")
		if err := into.UnmarshalBinary(b); err != nil || !into.Equal(c) {
			t.Fatalf("decoding into a non-empty counter gave %v (err %v), want %v", into, err, c)
		}
		// Canonical: the same state, built by another route, gives the same bytes.
		other := crdt.PNCounter{
			P: crdt.NewGCounter(rapid.Permutation(c.P.Slots()).Draw(t, "pperm")...),
			N: crdt.NewGCounter(rapid.Permutation(c.N.Slots()).Draw(t, "nperm")...),
		}
		other.Merge(pnJoin(c).Delta(genPNCounter().Draw(t, "anything"))) // adds nothing new
		b2, err := other.MarshalBinary()
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		if !bytes.Equal(b, b2) {
			t.Fatalf("equal states, different bytes: %x vs %x", b, b2)
		}
		// AppendBinary appends exactly MarshalBinary's bytes and keeps the prefix.
		prefix := []byte("prefix")
		app, err := c.AppendBinary(slices.Clone(prefix))
		if err != nil {
			t.Fatalf("append: %v", err)
		}
		if !bytes.Equal(app, append(slices.Clone(prefix), b...)) {
			t.Fatalf("AppendBinary = %x, want %x + %x", app, prefix, b)
		}
	})
}

func TestPNCounterEncodingDistinguishesStates(t *testing.T) {
	// Canonical the other way: different states never share an encoding.
	rapid.Check(t, func(t *rapid.T) {
		a := genPNCounter().Draw(t, "a")
		b := genPNCounter().Draw(t, "b")
		ea, err1 := a.MarshalBinary()
		eb, err2 := b.MarshalBinary()
		if err1 != nil || err2 != nil {
			t.Fatalf("marshal: %v %v", err1, err2)
		}
		if a.Equal(b) != bytes.Equal(ea, eb) {
			t.Fatalf("Equal=%v but bytes equal=%v: %v %v", a.Equal(b), bytes.Equal(ea, eb), a, b)
		}
	})
}
