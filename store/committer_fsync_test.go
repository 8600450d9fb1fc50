package store

import (
	"errors"
	"fmt"
	"sync"
	"testing"
)

// heldFsync is a CommitterConfig.fsync that holds its first call until let
// is called and then returns firstErr; later calls sync the store.
type heldFsync struct {
	s        *Store
	firstErr error
	entered  chan struct{} // closed when the first fsync starts
	release  chan struct{} // closed by let
	once     sync.Once
	letOnce  sync.Once
}

// let lets the first fsync end (at once if it has not started yet).
func (h *heldFsync) let() { h.letOnce.Do(func() { close(h.release) }) }

func newHeldFsync(s *Store, firstErr error) *heldFsync {
	return &heldFsync{s: s, firstErr: firstErr, entered: make(chan struct{}), release: make(chan struct{})}
}

func (h *heldFsync) fsync() error {
	first := false
	h.once.Do(func() { first = true })
	if !first {
		return h.s.db.Sync()
	}
	close(h.entered)
	<-h.release
	return h.firstErr
}

// waitEntered waits until the first fsync has started.
func (h *heldFsync) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-h.entered:
	case <-testCtx(t).Done():
		t.Fatal("the first batch never reached its fsync")
	}
}

// ownerState is state kept outside the committer and written by its Prepare
// hook, like region's counters: Prepare writes the current value if it
// changed, and a failed batch hands it back (dirty again).
type ownerState struct {
	mu     sync.Mutex // protects the fields below
	value  int
	dirty  bool
	calls  int
	afters []error // the after callbacks' errors, in call order
	order  []int   // the Prepare call each after callback belongs to
}

func newOwnerState() *ownerState { return &ownerState{} }

func (o *ownerState) set(v int) {
	o.mu.Lock()
	o.value, o.dirty = v, true
	o.mu.Unlock()
}

func (o *ownerState) prepare(dst []Mutation) ([]Mutation, func(error)) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls++
	call := o.calls
	wrote := o.dirty
	if wrote {
		dst = append(dst, Mutation{Key: []byte("x-state"), Value: fmt.Append(nil, o.value)})
		o.dirty = false
	}
	return dst, func(err error) {
		o.mu.Lock()
		defer o.mu.Unlock()
		o.afters = append(o.afters, err)
		o.order = append(o.order, call)
		if err != nil && wrote {
			o.dirty = true
		}
	}
}

// released reports whether tk's batch is final.
func released(tk Ticket) bool {
	select {
	case <-tk.Done():
		return true
	default:
		return false
	}
}

// A batch whose fsync fails fails its waiters and hands its state back to
// the owner; a submission made during that fsync goes into the next batch,
// which is cut after the state came back and writes it.
func TestCommitterFsyncFailureHandsStateBack(t *testing.T) {
	s := memStore(t)
	injected := errors.New("injected fsync failure")
	h := newHeldFsync(s, injected)
	o := newOwnerState()
	var log batchLog
	c := NewCommitter(s, CommitterConfig{Prepare: o.prepare, fsync: h.fsync, Observe: log.observe})
	t.Cleanup(func() { h.let(); c.Close() }) // a failed test must not leave the fsync held
	ctx := testCtx(t)

	o.set(1)
	a, err := c.Submit(Mutation{Key: key(1), Value: []byte("a")})
	if err != nil {
		t.Fatal(err)
	}
	h.waitEntered(t)
	o.set(2)
	b, err := c.Submit(Mutation{Key: key(2), Value: []byte("b")})
	if err != nil {
		t.Fatal(err)
	}
	if released(a) || released(b) {
		t.Fatal("a ticket was released before its fsync returned")
	}
	h.let()

	if err := a.Wait(ctx); !errors.Is(err, injected) {
		t.Fatalf("batch whose fsync failed: %v, want the fsync error", err)
	}
	if err := b.Wait(ctx); err != nil {
		t.Fatalf("batch after the failed one: %v", err)
	}
	if _, ok := get(t, s, key(2)); !ok {
		t.Fatal("the batch after the failed one is released but not written")
	}
	if v, ok := get(t, s, []byte("x-state")); !ok || string(v) != "2" {
		t.Fatalf("owner state after the failure = %q, %v; want 2", v, ok)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.afters) < 2 || !errors.Is(o.afters[0], injected) || o.afters[1] != nil {
		t.Fatalf("after callbacks got %v; want the fsync error, then nil", o.afters)
	}
	if o.order[0] != 1 || o.order[1] != 2 {
		t.Fatalf("after callbacks of Prepare calls %v, want 1 then 2 first", o.order)
	}
	if _, _, _, err := log.totals(); !errors.Is(err, injected) {
		t.Fatalf("Observe saw %v, want the fsync error", err)
	}
}

// Under concurrent load, every released ticket's mutations were in the store
// when an fsync that succeeded began: no write is acknowledged before an
// fsync covering it.
func TestCommitterReleasesOnlyAfterCoveringFsync(t *testing.T) {
	s, _ := openStore(t, t.TempDir())
	const n = 240
	var (
		mu      sync.Mutex
		covered = make([]bool, n)
	)
	fsync := func() error {
		var present []int
		for i := range n {
			mu.Lock()
			done := covered[i]
			mu.Unlock()
			if done {
				continue
			}
			if _, ok, err := s.get(key(i)); err != nil {
				return err
			} else if ok {
				present = append(present, i)
			}
		}
		if err := s.db.Sync(); err != nil {
			return err
		}
		mu.Lock()
		for _, i := range present {
			covered[i] = true
		}
		mu.Unlock()
		return nil
	}
	var log batchLog
	c := NewCommitter(s, CommitterConfig{fsync: fsync, Observe: log.observe})
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for g := range 8 {
		wg.Go(func() {
			for i := g; i < n; i += 8 {
				tk, err := c.Submit(Mutation{Key: key(i), Value: []byte("v")})
				if err == nil {
					err = tk.Wait(ctx)
				}
				if err == nil {
					mu.Lock()
					if !covered[i] {
						err = fmt.Errorf("key %d released before an fsync covering it", i)
					}
					mu.Unlock()
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	batches, tickets, _, err := log.totals()
	if err != nil || tickets != n {
		t.Fatalf("%d batches, %d tickets, error %v; want %d tickets, no error", batches, tickets, err, n)
	}
	t.Logf("%d submits in %d batches", n, batches)
}
