package region

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tallyhq/tally/store"
)

// holdCounted makes the recorder block the first counted view's request right
// after its claim and increment, before it reaches the group committer.
type holdCounted struct {
	held    chan struct{} // closed when a request is being held
	release chan struct{} // closed by the test to let it go on
	once    sync.Once
}

func newHoldCounted() *holdCounted {
	return &holdCounted{held: make(chan struct{}), release: make(chan struct{})}
}

func (h *holdCounted) hook(f store.Fate) {
	if f != store.FateCounted {
		return
	}
	first := false
	h.once.Do(func() { first = true })
	if first {
		close(h.held)
		<-h.release
	}
}

// A repeat of a view whose claim is not yet durable does not answer
// "duplicate" until it is: a crash could still lose the first view.
func TestRepeatWaitsForUnsyncedClaim(t *testing.T) {
	clock := newFakeClock(t0)
	h := newHoldCounted()
	rec := &recorder{onIngested: h.hook, batchCh: make(chan store.BatchStats, 64)}
	cfg := testConfig(clock)
	cfg.Observer = rec
	n := openNode(t, cfg)
	ctx := testCtx(t)
	v := View{Video: "v", User: "u"}

	type outcome struct {
		res      Result
		err      error
		released bool // the first view had been let go when this returned
	}
	var released atomic.Bool
	first, repeat := make(chan outcome, 1), make(chan outcome, 1)
	go func() {
		res, err := n.RecordView(ctx, v)
		first <- outcome{res, err, released.Load()}
	}()
	wait(t, h.held, "the first view to reach the hold")
	go func() {
		res, err := n.RecordView(ctx, v)
		repeat <- outcome{res, err, released.Load()}
	}()
	// Give a wrongly early answer every chance to arrive before looking.
	for range 1000 {
		runtime.Gosched()
	}
	select {
	case o := <-repeat:
		t.Fatalf("repeat answered %+v, %v while the first view's claim was not durable", o.res, o.err)
	default:
	}
	released.Store(true)
	close(h.release)

	o1, o2 := wait(t, first, "the first view"), wait(t, repeat, "the repeat")
	if o1.err != nil || !o1.res.Counted || o1.res.Count != 1 {
		t.Fatalf("first view: %+v, %v", o1.res, o1.err)
	}
	if o2.err != nil || o2.res.Fate != store.FateDuplicate || o2.res.Count != 1 {
		t.Fatalf("repeat: %+v, %v; want duplicate with count 1", o2.res, o2.err)
	}
	if !o2.released {
		t.Fatal("repeat answered before the first view was released")
	}
}

// A repeat that gives up waiting for the first view's claim returns its
// context's error rather than a premature "duplicate".
func TestRepeatWaitHonoursContext(t *testing.T) {
	clock := newFakeClock(t0)
	h := newHoldCounted()
	rec := &recorder{onIngested: h.hook, batchCh: make(chan store.BatchStats, 64)}
	cfg := testConfig(clock)
	cfg.Observer = rec
	n := openNode(t, cfg)
	v := View{Video: "v", User: "u"}

	first := make(chan error, 1)
	go func() {
		_, err := n.RecordView(testCtx(t), v)
		first <- err
	}()
	wait(t, h.held, "the first view to reach the hold")
	ctx, cancel := contextWithCancel(t)
	repeat := make(chan error, 1)
	go func() {
		_, err := n.RecordView(ctx, v)
		repeat <- err
	}()
	cancel() // the repeat cannot have its batch while the first view holds it open
	if err := wait(t, repeat, "the cancelled repeat"); err == nil {
		t.Fatal("a cancelled repeat answered while the first view's claim was not durable")
	}
	close(h.release)
	if err := wait(t, first, "the first view"); err != nil {
		t.Fatal(err)
	}
	if res := record(t, n, v); res.Fate != store.FateDuplicate || res.Count != 1 {
		t.Fatalf("repeat after the claim is durable: %+v", res)
	}
}
