package region

import (
	"fmt"
	"testing"
	"time"

	"github.com/tallyhq/tally/store"
)

// TestNodeSweepsExpiredEvents: a node deletes the raw events that expired
// while it was down, by the sweep it runs at start.
func TestNodeSweepsExpiredEvents(t *testing.T) {
	st, err := store.Open(store.InMemoryOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const blocks = 50
	seq := uint64(0)
	var muts []store.Mutation
	for ms := range int64(blocks) {
		var b store.EventBlock
		b.Add("video", "view", fmt.Sprintf("user-%d", ms), ms, store.FateCounted)
		muts = append(muts, b.Mutations(1_000+ms, 7, func() uint64 { seq++; return seq }, time.Second)...)
	}
	c := store.NewCommitter(st, store.CommitterConfig{})
	if _, err := c.Submit(muts...); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// Badger's TTLs are whole seconds of real time (the node sweeps at real
	// time too): wait until Badger hides every block as expired.
	deadline := time.Now().Add(testTimeout)
	for {
		visible := 0
		if err := st.ForEachEvent(0, 1<<40, func(store.Event) error { visible++; return nil }); err != nil {
			t.Fatal(err)
		}
		if visible == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events still unexpired after %v", visible, testTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}

	cfg := TestConfig()
	cfg.Store = st
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	deadline = time.Now().Add(testTimeout)
	for n.Stats().ExpiredSwept < blocks {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d expired event blocks swept after %v", n.Stats().ExpiredSwept, blocks, testTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := n.Stats().ExpiredSwept; got != blocks {
		t.Fatalf("%d records swept; want the %d expired blocks", got, blocks)
	}
}
