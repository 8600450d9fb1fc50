package region

import (
	"errors"
	"testing"
	"time"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/store"
)

// diskConfig is testConfig with its data in dir.
func diskConfig(clock *fakeClock, dir string, d Durability) Config {
	cfg := testConfig(clock)
	cfg.InMemory, cfg.DataDir, cfg.Durability = false, dir, d
	return cfg
}

func closeNode(t *testing.T, n *Node) {
	t.Helper()
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// eventsOf reads the raw event log of a closed node's directory.
func eventsOf(t *testing.T, dir string) []store.Event {
	t.Helper()
	s, err := store.Open(store.DefaultOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var evs []store.Event
	if err := s.ForEachEvent(0, 1<<62, func(ev store.Event) error { evs = append(evs, ev); return nil }); err != nil {
		t.Fatal(err)
	}
	return evs
}

// TestRestartKeepsCountsAndClaims, with either record of a claim won here:
// its counted event, when the event log outlives claims (the default), or a
// claim block, when it does not.
func TestRestartKeepsCountsAndClaims(t *testing.T) {
	for _, mode := range []struct {
		name      string
		retention time.Duration // of the event log; 0: the default
		blocks    bool          // claims won go into claim blocks
	}{{"claims in events", 0, false}, {"claim blocks", time.Hour, true}} {
		for _, d := range []Durability{DurabilitySync, DurabilityAsync} {
			t.Run(mode.name+"/"+string(d), func(t *testing.T) { testRestartKeepsCountsAndClaims(t, d, mode.retention, mode.blocks) })
		}
	}
}

func testRestartKeepsCountsAndClaims(t *testing.T, d Durability, retention time.Duration, blocks bool) {
	dir := t.TempDir()
	clock := newFakeClock(t0)
	config := func() Config {
		cfg := diskConfig(clock, dir, d)
		if retention > 0 {
			cfg.EventRetention = retention
		}
		if claimsInEvents(cfg) == blocks {
			t.Fatalf("retention %v, window %v: claims in events %v", cfg.EventRetention, cfg.DedupWindow, !blocks)
		}
		return cfg
	}
	n := openNode(t, config())
	first := n.Identity()
	if first.Reason != "new data directory" {
		t.Fatalf("first start: %+v", first)
	}
	for _, v := range []View{{Video: "v1", User: "u1"}, {Video: "v1", User: "u2"}, {Video: "v2", User: "u1"}, {Video: "v1", User: "u1"}} {
		record(t, n, v)
	}
	closeNode(t, n)

	// Restart in the same dedup window.
	clock.Advance(time.Hour)
	n = openNode(t, config())
	if id := n.Identity(); id != (store.Identity{Replica: first.Replica}) {
		t.Fatalf("identity after a clean restart = %+v, want %v kept", id, first.Replica)
	}
	if c := views(t, n, "v1"); c.Value != 2 || !c.LastUpdated.Equal(t0) {
		t.Fatalf("v1 after restart = %+v, want 2 at %v", c, t0)
	}
	if c := views(t, n, "v2"); c.Value != 1 {
		t.Fatalf("v2 after restart = %+v, want 1", c)
	}
	// Claims made by the previous run are read from Badger.
	for _, v := range []View{{Video: "v1", User: "u1"}, {Video: "v1", User: "u2"}, {Video: "v2", User: "u1"}} {
		if res := record(t, n, v); res.Fate != store.FateDuplicate {
			t.Fatalf("repeat %+v after restart: %+v, want duplicate", v, res)
		}
	}
	if res := record(t, n, View{Video: "v1", User: "u3"}); !res.Counted || res.Count != 3 {
		t.Fatalf("new view after restart: %+v, want count 3", res)
	}
	// The next day is a new window, decided in memory.
	clock.Advance(24 * time.Hour)
	if res := record(t, n, View{Video: "v1", User: "u1"}); !res.Counted || res.Count != 4 {
		t.Fatalf("next day: %+v, want counted with count 4", res)
	}
	closeNode(t, n)

	// Restart within that new window: its claim came back from Badger.
	n = openNode(t, config())
	if res := record(t, n, View{Video: "v1", User: "u1"}); res.Fate != store.FateDuplicate || res.Count != 4 {
		t.Fatalf("repeat after the second restart: %+v, want duplicate with count 4", res)
	}
	closeNode(t, n)

	c := counterOf(t, dir, "v1")
	if c.Value() != 4 || c.P.Len() != 1 || c.P.Get(first.Replica).Count != 4 {
		t.Fatalf("stored v1 = %v, want 4 in replica %v's slot", c, first.Replica)
	}
	// Every accepted view is in the raw event log with its fate.
	fates := map[store.Fate]int{}
	for _, ev := range eventsOf(t, dir) {
		if ev.Replica != first.Replica || ev.Event != EventView {
			t.Errorf("event %+v", ev)
		}
		fates[ev.Fate]++
	}
	if fates[store.FateCounted] != 5 || fates[store.FateDuplicate] != 5 {
		t.Errorf("event log fates = %v, want 5 counted and 5 duplicate", fates)
	}
	// The claims themselves are in claim blocks, or nowhere but in the
	// counted events. (With async durability, the batch of the view of u3
	// may be cut after the clock moved on a day, and then leaves its claim
	// out, expired: 4 or 5 in blocks.)
	if sets := claimSetsOf(t, dir); blocks && sets < 4 || !blocks && sets != 0 {
		t.Errorf("%d claim sets stored; claim blocks %v", sets, blocks)
	}
}

// claimSetsOf counts the claim sets stored in a closed node's directory
// (store.ForEachClaim: claim blocks and sets on their own).
func claimSetsOf(t *testing.T, dir string) int {
	t.Helper()
	s, err := store.Open(store.DefaultOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := 0
	if _, err := s.ForEachClaim(func(store.ClaimKey, crdt.Claims) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// A node that finds the dirty marker of an async run that did not shut down
// cleanly takes a new replica ID and counts in a new slot, keeping the old one.
func TestUncleanAsyncShutdownTakesNewReplica(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock(t0)

	n := openNode(t, diskConfig(clock, dir, DurabilitySync))
	old := n.Identity().Replica
	record(t, n, View{Video: "v", User: "u1"})
	closeNode(t, n)

	// An async run that dies: the dirty marker is set and never cleared.
	s, err := store.Open(store.DefaultOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	if id, err := s.OpenIdentity(true); err != nil || id.Replica != old {
		t.Fatalf("OpenIdentity(async) = %+v, %v", id, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	n = openNode(t, diskConfig(clock, dir, DurabilityAsync))
	id := n.Identity()
	if id.Previous != old || id.Replica == old || id.Replica == 0 || id.Reason != "unclean shutdown with async durability" {
		t.Fatalf("identity after an unclean async shutdown = %+v, want a new replica replacing %v", id, old)
	}
	if !n.Stats().StartedFresh {
		t.Error("Stats().StartedFresh = false")
	}
	if c := views(t, n, "v"); c.Value != 1 {
		t.Fatalf("count after the unclean shutdown = %+v, want 1", c)
	}
	if res := record(t, n, View{Video: "v", User: "u1"}); res.Fate != store.FateDuplicate {
		t.Fatalf("repeat: %+v, want duplicate (claim from the old replica's run)", res)
	}
	if res := record(t, n, View{Video: "v", User: "u2"}); !res.Counted || res.Count != 2 {
		t.Fatalf("new view: %+v, want count 2", res)
	}
	closeNode(t, n)

	c := counterOf(t, dir, "v")
	want := map[crdt.ReplicaID]uint64{old: 1, id.Replica: 1}
	got := c.Contributions()
	if len(got) != 2 || got[old] != 1 || got[id.Replica] != 1 {
		t.Fatalf("stored contributions = %v, want %v", got, want)
	}

	// That async run did shut down cleanly: the next start keeps its ID.
	n = openNode(t, diskConfig(clock, dir, DurabilityAsync))
	if got := n.Identity(); got != (store.Identity{Replica: id.Replica}) {
		t.Fatalf("identity after a clean async shutdown = %+v, want %v kept", got, id.Replica)
	}
}

// Open fails on a directory another node holds or one of a newer format.
func TestOpenRefusesUnusableDir(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock(t0)
	n := openNode(t, diskConfig(clock, dir, DurabilitySync))
	if n2, err := Open(diskConfig(clock, dir, DurabilitySync)); err == nil {
		n2.Close()
		t.Fatal("a second node opened a directory in use")
	}
	closeNode(t, n)

	s, err := store.Open(store.DefaultOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	c := store.NewCommitter(s, store.CommitterConfig{})
	tk, err := c.Submit(store.Mutation{Key: []byte("mformat"), Value: []byte{0, 0, 0, 0, 0, 0, 0, 99}})
	if err == nil {
		err = tk.Wait(testCtx(t))
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(c.Close(), s.Close()); err != nil {
		t.Fatal(err)
	}
	if n2, err := Open(diskConfig(clock, dir, DurabilitySync)); err == nil {
		n2.Close()
		t.Fatal("a node opened a directory of a newer format")
	}
}
