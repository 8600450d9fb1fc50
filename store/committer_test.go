package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/tallyhq/tally/crdt"
)

// batchLog collects the BatchStats a committer observes.
type batchLog struct {
	mu      sync.Mutex
	batches []BatchStats
}

func (l *batchLog) observe(st BatchStats) {
	l.mu.Lock()
	l.batches = append(l.batches, st)
	l.mu.Unlock()
}

func (l *batchLog) totals() (batches, tickets, mutations int, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range l.batches {
		tickets += b.Tickets
		mutations += b.Mutations
		if b.Err != nil && err == nil {
			err = b.Err
		}
	}
	return len(l.batches), tickets, mutations, err
}

// gate blocks the commit goroutine on its first batch, after Prepare (which
// runs with the admission gate held) and after the write, in the after
// callback: a test then controls which submissions land in the next batch,
// and Admit is not blocked meanwhile.
type gate struct {
	entered chan struct{} // closed when Prepare is first called
	release chan struct{} // closed by the test to let it return
	once    sync.Once
}

func newGate() *gate {
	return &gate{entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gate) prepare(dst []Mutation) ([]Mutation, func(error)) {
	first := false
	g.once.Do(func() { first = true })
	if !first {
		return dst, func(error) {}
	}
	return dst, func(error) {
		close(g.entered)
		<-g.release
	}
}

// blockCommitter submits one mutation and waits until the commit goroutine is
// held with its batch; every later Submit lands in the next batch.
func blockCommitter(t *testing.T, c *Committer, g *gate) Ticket {
	t.Helper()
	tk, err := c.Submit(Mutation{Key: []byte("x-first"), Value: []byte("1")})
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	select {
	case <-g.entered:
	case <-testCtx(t).Done():
		t.Fatal("commit goroutine never called Prepare")
	}
	return tk
}

func get(t *testing.T, s *Store, key []byte) ([]byte, bool) {
	t.Helper()
	v, ok, err := s.get(key)
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	return v, ok
}

func key(i int) []byte { return fmt.Appendf(nil, "x-%04d", i) }

func TestCommitterConcurrentSubmits(t *testing.T) {
	s := memStore(t)
	var log batchLog
	c := NewCommitter(s, CommitterConfig{Observe: log.observe})
	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			tk, err := c.Submit(Mutation{Key: key(i), Value: key(i)}, Mutation{Key: key(1000 + i), Value: []byte("b")})
			if err == nil {
				err = tk.Wait(testCtx(t))
			}
			if err == nil {
				// Released means durable: the data is readable now.
				if v, ok, gerr := s.get(key(i)); gerr != nil || !ok || !bytes.Equal(v, key(i)) {
					err = fmt.Errorf("key %d after Wait: %q, %v, %v", i, v, ok, gerr)
				}
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	batches, tickets, muts, err := log.totals()
	if err != nil {
		t.Fatalf("a batch failed: %v", err)
	}
	if tickets != n || muts != 2*n {
		t.Errorf("observed %d tickets and %d mutations, want %d and %d", tickets, muts, n, 2*n)
	}
	if batches < 1 || batches > n {
		t.Errorf("observed %d batches for %d submits", batches, n)
	}
	t.Logf("%d submits in %d batches", n, batches)
	for i := range n {
		if _, ok := get(t, s, key(1000+i)); !ok {
			t.Errorf("key %d missing", 1000+i)
		}
	}
}

// Submissions made while a batch is being written all go into one next batch.
func TestCommitterGroupsWaitingSubmits(t *testing.T) {
	s := memStore(t)
	var log batchLog
	g := newGate()
	c := NewCommitter(s, CommitterConfig{Prepare: g.prepare, Observe: log.observe})
	t.Cleanup(func() { c.Close() })
	first := blockCommitter(t, c, g)

	const n = 20
	tickets := make([]Ticket, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			tk, err := c.Submit(Mutation{Key: key(i), Value: []byte("v")})
			if err != nil {
				t.Errorf("Submit: %v", err)
			}
			tickets[i] = tk
		})
	}
	wg.Wait()
	for i, tk := range tickets {
		select {
		case <-tk.Done():
			t.Fatalf("ticket %d released while its batch cannot have been written", i)
		default:
		}
	}
	close(g.release)
	ctx := testCtx(t)
	if err := first.Wait(ctx); err != nil {
		t.Fatalf("first batch: %v", err)
	}
	for i, tk := range tickets {
		if err := tk.Wait(ctx); err != nil {
			t.Fatalf("ticket %d: %v", i, err)
		}
		if tk.b != tickets[0].b {
			t.Fatalf("ticket %d is in another batch than ticket 0", i)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.batches) != 2 || log.batches[0].Tickets != 1 || log.batches[1].Tickets != n || log.batches[1].Mutations != n {
		t.Fatalf("batches = %+v; want one of 1 ticket, then one of %d tickets and mutations", log.batches, n)
	}
}

func TestCommitterPrepare(t *testing.T) {
	s := memStore(t)
	var (
		mu       sync.Mutex
		prepares int
		afters   int
		afterErr []error
		state    []byte // "state kept elsewhere", written coalesced by Prepare
		written  int
	)
	var log batchLog
	c := NewCommitter(s, CommitterConfig{
		Observe: log.observe,
		Prepare: func(dst []Mutation) ([]Mutation, func(error)) {
			mu.Lock()
			defer mu.Unlock()
			prepares++
			if state != nil {
				dst = append(dst, Mutation{Key: []byte("x-state"), Value: state})
				state = nil
				written++
			}
			dst = append(dst, Mutation{Key: fmt.Appendf(nil, "p-%d", prepares), Value: []byte("p")})
			once := 0
			return dst, func(err error) {
				mu.Lock()
				defer mu.Unlock()
				once++
				if once > 1 {
					t.Errorf("after of batch %d called %d times", prepares, once)
				}
				afters++
				afterErr = append(afterErr, err)
			}
		},
	})
	ctx := testCtx(t)
	for i := range 5 {
		tk, err := c.Submit(Mutation{Key: key(i), Value: []byte("v")})
		if err != nil {
			t.Fatal(err)
		}
		if err := tk.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// State handed to Prepare without any Submit is durable after Flush.
	mu.Lock()
	state = []byte("coalesced")
	mu.Unlock()
	c.Kick()
	if err := c.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if v, ok := get(t, s, []byte("x-state")); !ok || string(v) != "coalesced" {
		t.Fatalf("prepared state after Flush = %q, %v", v, ok)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	if afters != prepares {
		t.Errorf("Prepare called %d times, its after %d times; want once per batch", prepares, afters)
	}
	for i, err := range afterErr {
		if err != nil {
			t.Errorf("after %d: %v", i, err)
		}
	}
	if written != 1 {
		t.Errorf("state written %d times, want 1", written)
	}
	for i := 1; i <= prepares; i++ {
		if _, ok := get(t, s, fmt.Appendf(nil, "p-%d", i)); !ok {
			t.Errorf("mutation of Prepare call %d not written", i)
		}
	}
	batches, tickets, _, _ := log.totals()
	if tickets != 6 || batches > prepares {
		t.Errorf("observed %d batches with %d tickets; want 6 tickets, ≤ %d batches", batches, tickets, prepares)
	}
}

func TestCommitterWriteError(t *testing.T) {
	s := memStore(t)
	var log batchLog
	var mu sync.Mutex
	var afterErrs []error
	c := NewCommitter(s, CommitterConfig{
		Observe: log.observe,
		Prepare: func(dst []Mutation) ([]Mutation, func(error)) {
			return dst, func(err error) { mu.Lock(); afterErrs = append(afterErrs, err); mu.Unlock() }
		},
	})
	ctx := testCtx(t)
	tk, err := c.Submit(Mutation{Key: nil, Value: []byte("empty keys are refused by Badger")})
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Wait(ctx); err == nil {
		t.Fatal("Wait on a batch Badger refused: no error")
	}
	// The committer keeps working after a failed batch.
	tk, err = c.Submit(Mutation{Key: key(1), Value: []byte("v")})
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Wait(ctx); err != nil {
		t.Fatalf("batch after a failed one: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	_, _, _, batchErr := log.totals()
	if batchErr == nil {
		t.Error("Observe never saw the failed batch's error")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(afterErrs) == 0 || afterErrs[0] == nil {
		t.Errorf("after of the failed batch got %v, want its error", afterErrs)
	}
}

func TestCommitterMaxPending(t *testing.T) {
	s := memStore(t)
	g := newGate()
	c := NewCommitter(s, CommitterConfig{Prepare: g.prepare, MaxPending: 3})
	t.Cleanup(func() { c.Close() })

	// A submission larger than the bound can never be admitted.
	if _, err := c.Admit(4); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("Admit(4) with MaxPending 3: %v, want ErrOverloaded", err)
	}

	first := blockCommitter(t, c, g)
	m := func(i int) Mutation { return Mutation{Key: key(i), Value: []byte("v")} }
	admitSubmit := func(muts ...Mutation) (Ticket, error) {
		release, err := c.Admit(len(muts))
		if err != nil {
			return Ticket{}, err
		}
		defer release()
		return c.Submit(muts...)
	}
	t1, err := admitSubmit(m(10), m(11))
	if err != nil {
		t.Fatalf("2 of 3: %v", err)
	}
	if _, err := admitSubmit(m(12), m(13)); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("2 more with 2 of 3 pending: %v, want ErrOverloaded", err)
	}
	t2, err := admitSubmit(m(14))
	if err != nil {
		t.Fatalf("filling the batch: %v", err)
	}
	if _, err := admitSubmit(m(15)); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("into a full batch: %v, want ErrOverloaded", err)
	}
	// Waiting on the batch needs no room.
	t3, err := admitSubmit()
	if err != nil {
		t.Fatalf("empty submission into a full batch: %v", err)
	}

	close(g.release)
	ctx := testCtx(t)
	for _, tk := range []Ticket{first, t1, t2, t3} {
		if err := tk.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range map[int]bool{10: true, 11: true, 12: false, 13: false, 14: true, 15: false} {
		if _, ok := get(t, s, key(i)); ok != want {
			t.Errorf("key %d written = %v, want %v", i, ok, want)
		}
	}
	// The next batch has room again.
	if _, err := admitSubmit(m(20), m(21), m(22)); err != nil {
		t.Fatalf("after the full batch was written: %v", err)
	}
}

// Prepare never runs while a caller holds an admission: state changed and
// submitted under one Admit is seen by Prepare exactly in the batch that
// holds the submission (or a later one), never in an earlier one.
func TestCommitterAdmitHoldsBatchCut(t *testing.T) {
	s := memStore(t)
	var mu sync.Mutex
	state, seen := 0, 0 // state is what Prepare reads; seen is the state the last batch wrote
	var bad []string
	c := NewCommitter(s, CommitterConfig{Prepare: func(dst []Mutation) ([]Mutation, func(error)) {
		mu.Lock()
		defer mu.Unlock()
		// Every submission of state v carries key "x-v"; the batch that first
		// sees state v must hold key x-v or an earlier batch did.
		for v := seen + 1; v <= state; v++ {
			found := false
			for _, m := range dst {
				if bytes.Equal(m.Key, key(v)) {
					found = true
				}
			}
			if !found {
				bad = append(bad, fmt.Sprintf("state %d written before its submission", v))
			}
		}
		seen = state
		return dst, func(error) {}
	}})
	t.Cleanup(func() { c.Close() })
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				release, err := c.Admit(1)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				state++
				v := state
				mu.Unlock()
				runtime.Gosched() // widen the gap between the change and its Submit
				_, err = c.Submit(Mutation{Key: key(v), Value: []byte("v")})
				release()
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := c.Flush(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("%d violations, first: %s", len(bad), bad[0])
	}
}

func TestCommitterClose(t *testing.T) {
	s := memStore(t)
	g := newGate()
	var log batchLog
	c := NewCommitter(s, CommitterConfig{Prepare: g.prepare, Observe: log.observe})
	first := blockCommitter(t, c, g)

	pending, err := c.Submit(Mutation{Key: key(1), Value: []byte("pending")})
	if err != nil {
		t.Fatal(err)
	}
	// Take back the kick of that Submit (the commit goroutine is held, so
	// nobody else reads it): only Close's final batch can now write it.
	<-c.kick
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	// Wait until Close has shut the door, then let the commit goroutine go.
	for {
		c.mu.Lock()
		shut := c.closed
		c.mu.Unlock()
		if shut {
			break
		}
		runtime.Gosched()
	}
	close(g.release)

	ctx := testCtx(t)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Close did not return")
	}
	// Close wrote what was pending before it returned.
	for _, tk := range []Ticket{first, pending} {
		select {
		case <-tk.Done():
		default:
			t.Fatal("a pending ticket is unreleased after Close")
		}
		if err := tk.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if v, ok := get(t, s, key(1)); !ok || string(v) != "pending" {
		t.Fatalf("pending mutation after Close: %q, %v", v, ok)
	}

	if _, err := c.Submit(Mutation{Key: key(2), Value: []byte("late")}); !errors.Is(err, ErrClosed) {
		t.Errorf("Submit after Close: %v, want ErrClosed", err)
	}
	if err := c.Flush(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Flush after Close: %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	c.Kick() // harmless after Close
	if _, ok := get(t, s, key(2)); ok {
		t.Error("a Submit refused after Close was written")
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.batches) != 2 || log.batches[1].Tickets != 1 || log.batches[1].Mutations != 1 {
		t.Errorf("batches %+v, want the held one and Close's final one with the pending mutation", log.batches)
	}
}

func TestCommitterCloseIdle(t *testing.T) {
	s := memStore(t)
	var log batchLog
	c := NewCommitter(s, CommitterConfig{Observe: log.observe})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if batches, _, _, _ := log.totals(); batches != 0 {
		t.Errorf("an idle Close observed %d batches, want 0", batches)
	}
}

func TestCommitterWaitContext(t *testing.T) {
	s := memStore(t)
	g := newGate()
	c := NewCommitter(s, CommitterConfig{Prepare: g.prepare})
	t.Cleanup(func() { c.Close() })
	tk := blockCommitter(t, c, g)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := tk.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with a cancelled context on a held batch: %v, want context.Canceled", err)
	}
	close(g.release)
	if err := tk.Wait(testCtx(t)); err != nil {
		t.Fatal(err)
	}
}

func TestCommitterDurableAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s, closeStore := openStore(t, dir)
	c := NewCommitter(s, CommitterConfig{})
	ctx := testCtx(t)
	const n = 50
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			cm, err := ClaimMutation(ClaimKey{Video: "v", User: fmt.Sprint(i), Window: 7}, crdt.NewClaims(3, int64(i+1)), time.Hour)
			if err != nil {
				t.Error(err)
				return
			}
			muts := []Mutation{{Key: key(i), Value: key(i)}, cm}
			tk, err := c.Submit(muts...)
			if err == nil {
				err = tk.Wait(ctx)
			}
			if err != nil {
				t.Errorf("write %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	// Deleting works too, and lands in order after the write.
	tk, err := c.Submit(Mutation{Key: key(0), Delete: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	closeStore()

	s, _ = openStore(t, dir)
	for i := range n {
		v, ok := get(t, s, key(i))
		if i == 0 {
			if ok {
				t.Errorf("deleted key %d present after reopen", i)
			}
			continue
		}
		if !ok || !bytes.Equal(v, key(i)) {
			t.Errorf("key %d after reopen: %q, %v", i, v, ok)
		}
		c, ok, err := s.Claim(ClaimKey{Video: "v", User: fmt.Sprint(i), Window: 7})
		if err != nil || !ok || !c.Equal(crdt.NewClaims(3, int64(i+1))) {
			t.Errorf("claim %d after reopen: %+v, %v, %v", i, c, ok, err)
		}
	}
}

// TestCommitterDone: Done(seq) is the batch's channel until the batch is
// written, and nil after; the next batch has the next seq.
func TestCommitterDone(t *testing.T) {
	s, _ := openStore(t, "")
	c := NewCommitter(s, CommitterConfig{Manual: true})
	defer c.Close()
	t1 := c.Next()
	ch := c.Done(t1.Seq())
	if ch == nil || ch != t1.Done() {
		t.Fatal("Done of the open batch is not its channel")
	}
	if _, err := c.Submit(Mutation{Key: []byte("m1"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if t2 := c.Next(); t2.Seq() != t1.Seq() {
		t.Fatalf("Next before a cut: seq %d, want %d", t2.Seq(), t1.Seq())
	}
	if !c.Step() {
		t.Fatal("nothing written")
	}
	if c.Done(t1.Seq()) != nil {
		t.Error("Done of a written batch is not nil")
	}
	select {
	case <-ch:
	default:
		t.Error("the written batch's channel is open")
	}
	if t3 := c.Next(); t3.Seq() != t1.Seq()+1 || c.Done(t3.Seq()) == nil {
		t.Errorf("next batch: seq %d (want %d), Done %v", t3.Seq(), t1.Seq()+1, c.Done(t3.Seq()))
	}
}
