package region

import (
	"fmt"
	"testing"
	"time"

	"github.com/tallyhq/tally/store"
)

// TestSharedEvents: the events of small ingest calls are written as one
// block per ingest millisecond, in the order the milliseconds were first
// used, each block holding its events in the order they came; the raw event
// log reads back every event with its ingest time and fate.
func TestSharedEvents(t *testing.T) {
	clock := newFakeClock(t0)
	n := openNode(t, testConfig(clock))
	ms := t0.UnixMilli()
	var s sharedEvents
	ev := func(user string, fate store.Fate) loggedView {
		return loggedView{video: "v", event: EventView, user: user, clientMs: 7, fate: fate}
	}
	s.add(ms, []loggedView{ev("a", store.FateCounted)})
	s.add(ms+1, []loggedView{ev("b", store.FateDuplicate), ev("c", store.FateCounted)})
	s.add(ms, []loggedView{ev("d", store.FateRateLimited)})
	muts := s.mutations(nil, n.id.Replica, n.nextSeq, time.Hour)
	if len(muts) != 2 {
		t.Fatalf("%d writes, want one block per millisecond: 2", len(muts))
	}
	if again := s.mutations(nil, n.id.Replica, n.nextSeq, time.Hour); len(again) != 0 {
		t.Fatalf("the blocks were written again: %d writes", len(again))
	}
	if _, err := n.committer.Submit(muts...); err != nil {
		t.Fatal(err)
	}
	if err := n.committer.Flush(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := n.AuditEvents(ms, ms+2, "v", func(e store.Event) error {
		got = append(got, fmt.Sprintf("%s@%d:%s", e.User, e.IngestMs-ms, e.Fate))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprint([]string{"a@0:counted", "d@0:rate_limited", "b@1:duplicate", "c@1:counted"})
	if fmt.Sprint(got) != want {
		t.Fatalf("events %v, want %v", got, want)
	}
}

// TestSingleViewsShareBlocks: single views admitted to one batch in one
// millisecond log their raw events in one shared block, which the batch
// writes; every view is in the raw event log with its fate.
func TestSingleViewsShareBlocks(t *testing.T) {
	st, err := store.Open(store.InMemoryOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() }) // after the node's Close (cleanups run last first)
	clock := newFakeClock(t0)
	cfg := testConfig(clock)
	cfg.Store, cfg.ManualCommit = st, true // batches are cut by StepCommit alone
	n := openNode(t, cfg)
	for n.StepCommit() { // what Open wrote
	}
	var pending []*Pending
	for i := range 10 {
		p, err := n.SubmitViews([]View{{Video: "v", User: fmt.Sprint("u", i%8)}}) // two duplicates
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, p)
	}
	n.sharedEvents.mu.Lock()
	blocks := len(n.sharedEvents.blocks)
	events := 0
	if blocks > 0 {
		events = n.sharedEvents.blocks[0].events.Len()
	}
	n.sharedEvents.mu.Unlock()
	if blocks != 1 || events != 10 {
		t.Fatalf("10 single views in one millisecond: %d shared blocks, the first of %d events; want one of 10", blocks, events)
	}
	if !n.StepCommit() {
		t.Fatal("nothing to write")
	}
	for _, p := range pending {
		if done, err := p.Done(); !done || err != nil {
			t.Fatalf("a view's batch: done %v, %v", done, err)
		}
	}
	fates := map[store.Fate]int{}
	if err := n.AuditEvents(0, 1<<62, "v", func(e store.Event) error { fates[e.Fate]++; return nil }); err != nil {
		t.Fatal(err)
	}
	if fates[store.FateCounted] != 8 || fates[store.FateDuplicate] != 2 || len(fates) != 2 {
		t.Fatalf("fates in the raw event log: %v, want 8 counted and 2 duplicates", fates)
	}
}
