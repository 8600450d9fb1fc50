package region

import (
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// TestBatchDecidesAsViewByView: a large ingest call decides its views a
// step at a time for all of them (decideMany: deny list, user limiter,
// address limiter, claims, each a table shard at a time), and every view
// meets the fate it would have met in calls of one view each, in order, at
// the same time: repeats of a user, an address and a claim key inside the
// call and across calls, likes and unlikes, denied users and addresses.
func TestBatchDecidesAsViewByView(t *testing.T) {
	deny, err := ParseDenyList(strings.NewReader("user:bot\nip:203.0.113.0/24\n"))
	if err != nil {
		t.Fatal(err)
	}
	rapid.Check(t, func(rt *rapid.T) {
		clock := newFakeClock(t0)
		cfg := testConfig(clock)
		cfg.UserRate, cfg.UserBurst = 1, 3
		cfg.IPRate, cfg.IPBurst = 1, 5
		cfg.Deny = deny
		batched, single := openPropNode(rt, cfg), openPropNode(rt, cfg)
		defer batched.Close()
		defer single.Close()
		view := rapid.Custom(func(rt *rapid.T) View {
			v := View{
				Video: rapid.SampledFrom([]string{"a", "b"}).Draw(rt, "video"),
				User:  rapid.SampledFrom([]string{"u0", "u1", "u2", "u3", "u4", "bot"}).Draw(rt, "user"),
				IP:    rapid.SampledFrom([]string{"", "10.0.0.1", "10.0.0.2", "203.0.113.9"}).Draw(rt, "ip"),
				Event: rapid.SampledFrom([]string{"", EventView, EventLike, "share"}).Draw(rt, "event"),
			}
			v.Unlike = v.Event == EventLike && rapid.Bool().Draw(rt, "unlike")
			return v
		})
		for call := range rapid.IntRange(1, 3).Draw(rt, "calls") {
			vs := rapid.SliceOfN(view, sharedEventsMax+1, 40).Draw(rt, "views")
			got, err := batched.RecordViews(testCtx(t), vs)
			if err != nil {
				rt.Fatalf("call %d: RecordViews: %v", call, err)
			}
			for i, v := range vs {
				want, err := single.RecordViews(testCtx(t), []View{v})
				if err != nil {
					rt.Fatalf("call %d, view %d: RecordViews: %v", call, i, err)
				}
				if g, w := got[i], want[0]; g.Fate != w.Fate || g.Counted != w.Counted || (g.Err == nil) != (w.Err == nil) {
					rt.Fatalf("call %d, view %d %+v: in one call %v (counted %v, err %v), alone %v (counted %v, err %v)",
						call, i, v, g.Fate, g.Counted, g.Err, w.Fate, w.Counted, w.Err)
				}
			}
		}
		for _, video := range []string{"a", "b"} {
			for _, ev := range []string{EventView, EventLike, "share"} {
				g, gerr := batched.NetCount(video, ev)
				w, werr := single.NetCount(video, ev)
				if g != w || gerr != nil || werr != nil {
					rt.Fatalf("%s %s: %d (%v) in calls of many, %d (%v) alone", video, ev, g, gerr, w, werr)
				}
			}
		}
	})
}

// openPropNode opens a node for one run of a property; the run closes it.
func openPropNode(rt *rapid.T, cfg Config) *Node {
	n, err := Open(cfg)
	if err != nil {
		rt.Fatalf("Open: %v", err)
	}
	return n
}
