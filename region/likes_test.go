package region

import (
	"context"
	"testing"
	"time"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/store"
)

// TestLikeLatestIntentWins: a like made in a region that had not heard of
// the user's earlier transitions loses its transition number to an older
// like after the heal. If it is later than every transition from that
// number on, its region makes it again as the next transition (at its own
// time), whatever order the peer's transitions arrive in; if not, the older
// history stands. It is made again once, however often the same claims
// arrive.
func TestLikeLatestIntentWins(t *testing.T) {
	const self, peer = crdt.ReplicaID(5), crdt.ReplicaID(9)
	own := []crdt.ReplicaID{self}
	peerLike, peerUnlike := crdt.NewClaims(peer, 1000), crdt.NewClaims(peer, 2000)

	for _, tc := range []struct {
		name      string
		ownLikeMs int64
		order     []uint64 // the peer's transitions, in arrival order
		wantLiked bool
	}{
		{"latest, in order", 5000, []uint64{1, 2}, true},
		{"latest, unlike first", 5000, []uint64{2, 1}, true},
		{"between the peer's like and unlike", 1500, []uint64{1, 2}, false},
		{"between, unlike first", 1500, []uint64{2, 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := newLikeTable()
			k1, made, _ := tab.transition("v", "u", true, self, tc.ownLikeMs)
			if !made || k1 != likeKey("v", "u", 1) {
				t.Fatalf("own like: %v, %v", k1, made)
			}
			var reapplied []mergeResult
			owed := 0
			for _, n := range tc.order {
				c := peerLike
				if n == 2 {
					c = peerUnlike
				}
				r := tab.merge(likeKey("v", "u", n), c, own)
				owed += len(r.owed)
				if r.reapplied != (store.ClaimKey{}) {
					reapplied = append(reapplied, r)
				}
			}
			if owed != 1 {
				t.Fatalf("own like compensated %d times, want once", owed)
			}
			if tc.wantLiked {
				if len(reapplied) != 1 || reapplied[0].reapplied != likeKey("v", "u", 3) || reapplied[0].reappliedMs != tc.ownLikeMs {
					t.Fatalf("made again: %+v, want the like as transition 3 at %d", reapplied, tc.ownLikeMs)
				}
				c, ok := tab.get(likeKey("v", "u", 3))
				if w, ms, _ := c.Winner(); !ok || w != self || ms != tc.ownLikeMs {
					t.Fatalf("transition 3: %v", c)
				}
			} else if len(reapplied) != 0 {
				t.Fatalf("made again: %+v, want nothing (the peer's unlike is later)", reapplied)
			}
			if got := tab.liked("v", "u"); got != tc.wantLiked {
				t.Fatalf("liked = %v, want %v", got, tc.wantLiked)
			}
			if got, want := tab.count("v"), map[bool]uint64{true: 1, false: 0}[tc.wantLiked]; got != want {
				t.Fatalf("count = %d, want %d", got, want)
			}
			// The same claims again, and the peer learning ours: no more steps.
			for _, n := range []uint64{1, 2} {
				c := peerLike
				if n == 2 {
					c = peerUnlike
				}
				if r := tab.merge(likeKey("v", "u", n), c, own); len(r.owed) != 0 || r.reapplied != (store.ClaimKey{}) {
					t.Fatalf("repeat of transition %d: %+v", n, r)
				}
			}
			if tc.wantLiked {
				// A peer's concurrent claim of transition 3 at an older time
				// wins it; the like is still the latest and the user's state
				// is still a like, so nothing more is made.
				r := tab.merge(likeKey("v", "u", 3), crdt.NewClaims(peer, 3000), own)
				if len(r.owed) != 1 || r.reapplied != (store.ClaimKey{}) || !tab.liked("v", "u") {
					t.Fatalf("transition 3 lost to an older like: %+v, liked %v", r, tab.liked("v", "u"))
				}
			}
		})
	}
}

// TestLatestLostIntent checks the rule on hand-built histories.
func TestLatestLostIntent(t *testing.T) {
	const a, b, c = crdt.ReplicaID(1), crdt.ReplicaID(2), crdt.ReplicaID(3)
	claims := func(cs ...crdt.Claims) crdt.Claims {
		var out crdt.Claims
		for _, x := range cs {
			out.Merge(x)
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		ts     []crdt.Claims
		own    []crdt.ReplicaID
		wantK  uint64
		wantMs int64
		wantOK bool
	}{
		{"nothing lost", []crdt.Claims{crdt.NewClaims(a, 10), crdt.NewClaims(b, 20)}, []crdt.ReplicaID{a}, 0, 0, false},
		{"lost, later than all", []crdt.Claims{claims(crdt.NewClaims(a, 10), crdt.NewClaims(b, 50)), crdt.NewClaims(a, 20)}, []crdt.ReplicaID{b}, 1, 50, true},
		{"lost, not later than the next winner", []crdt.Claims{claims(crdt.NewClaims(a, 10), crdt.NewClaims(b, 50)), crdt.NewClaims(a, 60)}, []crdt.ReplicaID{b}, 0, 0, false},
		{"a tie in time is not later", []crdt.Claims{claims(crdt.NewClaims(a, 10), crdt.NewClaims(b, 10))}, []crdt.ReplicaID{b}, 0, 0, false},
		{"another node's lost claim is not ours to act on", []crdt.Claims{claims(crdt.NewClaims(a, 10), crdt.NewClaims(c, 50))}, []crdt.ReplicaID{b}, 0, 0, false},
		{"a retired ID's claim is ours", []crdt.Claims{claims(crdt.NewClaims(a, 10), crdt.NewClaims(c, 50))}, []crdt.ReplicaID{b, c}, 1, 50, true},
		{"the latest of two", []crdt.Claims{
			claims(crdt.NewClaims(a, 10), crdt.NewClaims(b, 40)),
			claims(crdt.NewClaims(a, 20), crdt.NewClaims(b, 45)),
			{}, // a gap
		}, []crdt.ReplicaID{b}, 2, 45, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, ms, ok := latestLostIntent(tc.ts, tc.own)
			if k != tc.wantK || ms != tc.wantMs || ok != tc.wantOK {
				t.Fatalf("latestLostIntent = %d, %d, %v; want %d, %d, %v", k, ms, ok, tc.wantK, tc.wantMs, tc.wantOK)
			}
		})
	}
}

// TestReappliedLikeSettles: a like made again for a lost latest intent is
// released once its batch is durable, so a repeat of the like answers at
// once ("already liked") instead of waiting on a transition nobody settles.
func TestReappliedLikeSettles(t *testing.T) {
	clock := newFakeClock(t0.Add(5 * time.Second))
	n := openNode(t, testConfig(clock))
	if res := like(t, n, "v", "u"); !res.Counted {
		t.Fatalf("like: %+v", res)
	}
	// A peer that had liked and unliked earlier, unheard of here.
	const peer = crdt.ReplicaID(0x7eed)
	for k, ms := range map[uint64]int64{1: t0.UnixMilli() + 1000, 2: t0.UnixMilli() + 2000} {
		if _, err := n.mergeClaims(likeKey("v", "u", k), crdt.NewClaims(peer, ms)); err != nil {
			t.Fatal(err)
		}
	}
	if !n.Liked("v", "u") {
		t.Fatal("the later like here was not made again over the peer's earlier unlike")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := n.RecordView(ctx, View{Video: "v", User: "u", Event: EventLike})
	if err != nil || res.Counted || res.Fate != store.FateDuplicate {
		t.Fatalf("repeat of the like: %+v, %v; want a duplicate at once", res, err)
	}
	if got := likes(t, n, "v"); got != 1 {
		t.Fatalf("Likes = %d, want 1", got)
	}
}
