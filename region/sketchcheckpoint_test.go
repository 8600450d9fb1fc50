package region

import (
	"fmt"
	"testing"
	"time"

	"github.com/tallyhq/tally/crdt"
)

// TestSketchCheckpoints: a chunk grown by local views is not written with
// their batch but at the next checkpoint; a node that crashed before it
// replays the counted views since the sketch mark at start, and estimates
// what it did before; a checkpoint writes every owed chunk and moves the
// mark; a view ingested before the checkpoint in progress started (the
// clock went back) has its chunk written with its batch.
func TestSketchCheckpoints(t *testing.T) {
	st, clock, cfg := crashConfig(t)
	if !sketchesInEvents(cfg) {
		t.Fatal("the test config does not defer chunk writes")
	}
	open := func() *Node {
		t.Helper()
		n, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	submit := func(n *Node, views ...View) { t.Helper(); submitDurable(t, n, views...) }
	storedChunks := func() map[crdt.Key]bool {
		t.Helper()
		m := map[crdt.Key]bool{}
		if err := st.ForEachCounter(func(k crdt.Key, _ crdt.PNCounter) error {
			if k.IsUnique() {
				m[k] = true
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return m
	}
	mark := func() int64 {
		t.Helper()
		ms, ok, err := st.SketchMark()
		if err != nil || !ok {
			t.Fatalf("sketch mark: %d, %v, %v", ms, ok, err)
		}
		return ms
	}
	estimates := func(n *Node) [3]uint64 {
		t.Helper()
		var e [3]uint64
		for i := range e {
			var err error
			if e[i], err = n.UniqueViewers(fmt.Sprintf("v%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		return e
	}

	n := open() // a new store: the mark is its start
	if got := mark(); got != t0.UnixMilli() {
		t.Fatalf("mark of a new store %d, want %d", got, t0.UnixMilli())
	}
	// The first batch after a start begins a checkpoint; the next is due
	// sketchCheckpointEvery later.
	submit(n, View{Video: "v2", User: "u9"})
	first := len(storedChunks())
	batch := make([]View, 300)
	for i := range batch {
		batch[i] = View{Video: "v0", User: fmt.Sprintf("u%d", i)}
	}
	submit(n, batch...) // an ingest call of its own, in a block
	for i := range 40 {
		submit(n, View{Video: "v1", User: fmt.Sprintf("u%d", i)}) // single views
	}
	if c := storedChunks(); len(c) != first {
		t.Fatalf("%d chunks written with their views; want none before a checkpoint", len(c)-first)
	}
	before := estimates(n)
	if before[0] < 250 || before[1] < 30 {
		t.Fatalf("estimates %v", before)
	}

	// Crash: the node is abandoned, its store kept (only durable state).
	clock.Advance(time.Second)
	n = open()
	if got := estimates(n); got != before {
		t.Fatalf("estimates after a crash %v, want %v as before", got, before)
	}

	// A checkpoint is due: the next batch writes every owed chunk, and the
	// checkpoint's start becomes the mark.
	clock.Advance(sketchCheckpointEvery * time.Millisecond)
	cpStart := clock.Now().UnixMilli()
	submit(n, View{Video: "v2", User: "u0"})
	want := 0
	for _, k := range n.uniques.keys() {
		want++
		if !storedChunks()[k] {
			t.Errorf("chunk %s not written by the checkpoint", k)
		}
	}
	if got := mark(); got != cpStart {
		t.Fatalf("mark after the checkpoint %d, want its start %d", got, cpStart)
	}

	// The clock goes back: a view ingested before the checkpoint started
	// writes its chunk with its batch, as the mark would not replay it.
	clock.Advance(-10 * time.Second)
	submit(n, View{Video: "v2", User: "u1"})
	chunks := storedChunks()
	c, _, _ := crdt.HLLPosition("u1")
	if !chunks[crdt.UniqueKey("v2", c)] {
		t.Fatal("the chunk of a view ingested before the checkpoint's start was not written with it")
	}
	if len(chunks) < want {
		t.Fatalf("%d chunks stored, want at least %d", len(chunks), want)
	}
	// Views after the checkpoint's start: owed to the next one.
	clock.Advance(11 * time.Second)
	for i := 100; i < 120; i++ {
		submit(n, View{Video: "v1", User: fmt.Sprintf("u%d", i)})
	}
	before = estimates(n)
	n = open() // crash again
	if got := estimates(n); got != before {
		t.Fatalf("estimates after the second crash %v, want %v", got, before)
	}
	if !n.uniques.owes(clock.Now().UnixMilli()) {
		t.Fatal("the views replayed after a crash left no chunk owed to a checkpoint")
	}

	// A clean stop writes every owed chunk in its last batch: the next
	// start has nothing to replay.
	clock.Advance(time.Second)
	closeNode(t, n)
	if got := mark(); got != clock.Now().UnixMilli() {
		t.Fatalf("mark after a clean stop %d, want the stop's time %d", got, clock.Now().UnixMilli())
	}
	n = open()
	if n.uniques.owes(clock.Now().UnixMilli()) {
		t.Fatal("chunks owed after a clean stop and start")
	}
	if got := estimates(n); got != before {
		t.Fatalf("estimates after a clean restart %v, want %v", got, before)
	}
	closeNode(t, n)
}

// TestSketchCheckpointPace: a checkpoint of many owed chunks writes
// sketchSliceMin of them in its first batch, then as many as its pace
// allows for the time since the last batch (plus what grew), not
// sketchSliceMin in every batch; it is done, and moves the mark, once its
// pace has covered the list.
func TestSketchCheckpointPace(t *testing.T) {
	st, clock, cfg := crashConfig(t)
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer closeNode(t, n)
	submit := func(views ...View) { t.Helper(); submitDurable(t, n, views...) }
	stored := func() int {
		t.Helper()
		c := 0
		if err := st.ForEachCounter(func(k crdt.Key, _ crdt.PNCounter) error {
			if k.IsUnique() {
				c++
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return c
	}
	submit(View{Video: "first", User: "u"}) // the start's checkpoint: nothing owed yet
	var views []View
	for v := range 200 {
		for u := range 40 {
			views = append(views, View{Video: fmt.Sprintf("v%d", v), User: fmt.Sprintf("u%d", u)})
		}
	}
	submit(views...)
	owed := n.uniques.owed.len()
	if owed < 4*sketchSliceMin {
		t.Fatalf("%d chunks owed; want several slices' worth", owed)
	}
	base := stored()

	clock.Advance(sketchCheckpointEvery * time.Millisecond)
	cpStart := clock.Now().UnixMilli()
	submit(View{Video: "first", User: "u2"}) // grows at most one chunk
	if got := stored() - base; got < sketchSliceMin || got > sketchSliceMin+1 {
		t.Fatalf("first batch of the checkpoint wrote %d chunks; want %d", got, sketchSliceMin)
	}
	// Batches 1 ms apart: each writes its share of the pace, about 10.
	for i := range 5 {
		before := stored()
		clock.Advance(time.Millisecond)
		submit(View{Video: "first", User: fmt.Sprintf("w%d", i)})
		perMs := float64(sketchSliceMin) / sketchSlicePeriodMs
		if got := stored() - before; float64(got) > perMs+2 {
			t.Fatalf("a batch 1 ms after the last wrote %d chunks; want at most about %.0f", got, perMs)
		}
	}
	if ms, _, _ := st.SketchMark(); ms == cpStart {
		t.Fatal("the checkpoint is done after a few batches; want it paced")
	}
	// Enough time for the pace to cover the list: the next batch ends it.
	clock.Advance(time.Duration(owed/sketchSliceMin+1) * sketchSlicePeriodMs * time.Millisecond)
	submit(View{Video: "first", User: "last"})
	if ms, ok, err := st.SketchMark(); err != nil || !ok || ms != cpStart {
		t.Fatalf("mark %d, %v, %v; want the checkpoint's start %d", ms, ok, err, cpStart)
	}
	if n.uniques.owes(clock.Now().UnixMilli()) {
		t.Fatal("chunks still owed after the checkpoint")
	}
}

// submitDurable ingests views as one call on n (a node with ManualCommit)
// and steps its committer until they are durable.
func submitDurable(t *testing.T, n *Node, views ...View) {
	t.Helper()
	p, err := n.SubmitViews(views)
	if err != nil {
		t.Fatal(err)
	}
	for {
		done, err := p.Done()
		if err != nil {
			t.Fatal(err)
		}
		if done {
			return
		}
		n.StepCommit()
	}
}
