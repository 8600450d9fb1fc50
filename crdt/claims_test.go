package crdt_test

import (
	"testing"

	"pgregory.net/rapid"

	"github.com/tallyhq/tally/crdt"
)

// claimReplica is one replica in the claim-rule model: its claim set for one
// (video, user, window) and its counter of that video.
type claimReplica struct {
	id      crdt.ReplicaID
	claims  crdt.Claims
	counter crdt.PNCounter
}

// absorb merges another replica's claim set and counter, then compensates if
// the merge made this replica a loser, as region does in one durable write.
func (r *claimReplica) absorb(o *claimReplica) {
	r.claims.Merge(o.claims.Clone())
	r.counter.Merge(o.counter.Clone())
	r.settle()
}

func (r *claimReplica) settle() {
	if r.claims.Compensate(r.id) {
		r.counter.Decrement(r.id, 1, 1)
	}
}

// TestClaimRuleProperty: any number of replicas claim the same view at any
// times, then exchange states in any order, any number of times, with any
// replica restarting from its durable state between steps. Once everyone has
// heard from everyone, every replica agrees on one winner and the count of
// the view is exactly 1 everywhere; at no point is any replica's count above
// the number of claimants nor below 0 (a compensation never precedes its
// claim: both are in the same state).
func TestClaimRuleProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 5).Draw(t, "replicas")
		reps := make([]*claimReplica, n)
		for i := range reps {
			reps[i] = &claimReplica{id: crdt.ReplicaID(i + 1)}
			if i == 0 || rapid.Bool().Draw(t, "claims") {
				ms := rapid.Int64Range(1, 5).Draw(t, "ingestMs") // small range: ties
				reps[i].claims = crdt.NewClaims(reps[i].id, ms)
				reps[i].counter.Increment(reps[i].id, 1, ms)
			}
		}
		steps := rapid.IntRange(0, 30).Draw(t, "steps")
		for range steps {
			a := rapid.IntRange(0, n-1).Draw(t, "to")
			b := rapid.IntRange(0, n-1).Draw(t, "from")
			reps[a].absorb(reps[b])
			if v := reps[a].counter.Value(); v > uint64(n) {
				t.Fatalf("replica %d counts %d with %d replicas", a, v, n)
			}
		}
		// Everyone hears from everyone (twice round, so losers' compensations spread).
		for range 2 {
			for _, a := range reps {
				for _, b := range reps {
					a.absorb(b)
				}
			}
		}
		w0, _, _ := reps[0].claims.Winner()
		for i, r := range reps {
			if v := r.counter.Value(); v != 1 {
				t.Fatalf("replica %d counts %d, want 1 (claims %v, counter %v)", i, v, r.claims, r.counter)
			}
			if w, _, _ := r.claims.Winner(); w != w0 {
				t.Fatalf("replica %d picks winner %s, replica 0 %s", i, w, w0)
			}
			if !r.claims.Equal(reps[0].claims) || !r.counter.Equal(reps[0].counter) {
				t.Fatalf("replica %d differs: %v %v vs %v %v", i, r.claims, r.counter, reps[0].claims, reps[0].counter)
			}
		}
	})
}

// TestClaimsThreeRegions spells out the three-claimant case: b wins on
// ingest time, a and c each compensate once, and a second merge changes
// nothing.
func TestClaimsThreeRegions(t *testing.T) {
	a, b, c := crdt.NewClaims(1, 300), crdt.NewClaims(2, 100), crdt.NewClaims(3, 100)
	all := a.Clone()
	all.Merge(b)
	all.Merge(c)
	if w, ms, _ := all.Winner(); w != 2 || ms != 100 {
		t.Fatalf("winner %s at %d, want replica 2 at 100 (tie on time broken by replica ID)", w, ms)
	}
	for _, r := range []crdt.ReplicaID{1, 3} {
		if !all.Owes(r) || !all.Compensate(r) || all.Compensate(r) || all.Stage(r) != crdt.StageCompensated {
			t.Fatalf("replica %s: want exactly one compensation, got claims %v", r, all)
		}
	}
	if all.Owes(2) || all.Compensate(2) {
		t.Fatal("the winner owes nothing")
	}
	again := all.Clone()
	if again.Merge(a) || again.Merge(b) || again.Merge(c) {
		t.Fatal("merging the original claims moved a compensated claim back")
	}
}

func TestClaimKeyRoundTrip(t *testing.T) {
	ck := crdt.ClaimKey{Video: "v:1", User: "u-2.x", Window: 20416}
	k := ck.Key()
	if !k.IsClaim() || (crdt.Key{Video: "v", Event: "view"}).IsClaim() {
		t.Fatalf("IsClaim wrong for %v", k)
	}
	got, ok := crdt.ParseClaimKey(k)
	if !ok || got != ck {
		t.Fatalf("ParseClaimKey(%v) = %v, %v", k, got, ok)
	}
	for _, bad := range []string{"!", "!@1", "!u@", "!u@x", "view", "!u@-1"} {
		if _, ok := crdt.ParseClaimKey(crdt.Key{Video: "v", Event: bad}); ok {
			t.Errorf("ParseClaimKey accepted event %q", bad)
		}
	}
}

func TestClaimsFromState(t *testing.T) {
	good := crdt.NewClaims(7, 10).State()
	if _, err := crdt.ClaimsFromState(good); err != nil {
		t.Fatal(err)
	}
	withN := good.Clone()
	withN.Decrement(7, 1, 10)
	stage3 := crdt.PNCounter{P: crdt.NewGCounter(crdt.Slot{Replica: 1, Count: 3, Updated: 1})}
	for name, st := range map[string]crdt.PNCounter{"N slots": withN, "stage 3": stage3} {
		if _, err := crdt.ClaimsFromState(st); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
