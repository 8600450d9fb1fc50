package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Mutation is one key write (or delete) for the Committer.
type Mutation struct {
	Key    []byte
	Value  []byte
	TTL    time.Duration // 0: keep forever
	Delete bool
}

// Sentinel errors of the Committer.
var (
	// ErrOverloaded is returned by Admit when the next batch is already full;
	// the caller should shed the request (HTTP 503 with Retry-After).
	ErrOverloaded = errors.New("store: commit queue full")
	// ErrClosed is returned by Admit and Submit after Close.
	ErrClosed = errors.New("store: committer closed")
)

// BatchStats describes one committed batch, for metrics.
type BatchStats struct {
	Mutations int           // Badger entries written
	Tickets   int           // Submit calls released by this batch
	Write     time.Duration // time to hand the batch to Badger
	// Sync is the time of the fsync. A store on disk fsyncs inside the
	// write (Open), and then Sync is the same time as Write.
	Sync time.Duration
	Err  error
}

// CommitterConfig configures a Committer.
type CommitterConfig struct {
	// Prepare, if set, is called on the commit goroutine at the start of every
	// batch. It appends the mutations of state kept elsewhere (coalesced counter
	// states) to dst and returns a function the committer calls once the batch
	// is durable (err nil) or failed; on failure the owner must mark that state
	// dirty again.
	Prepare func(dst []Mutation) ([]Mutation, func(err error))
	// MaxPending bounds the mutations waiting for the next batch (memory bound
	// under overload), as checked by Admit. Default 1,000,000.
	MaxPending int
	// Observe, if set, is called after every batch.
	Observe func(BatchStats)
	// Manual runs no goroutine: batches are cut and written only by Step,
	// on the caller's goroutine. The simulator uses it to decide when fsync
	// happens (and so what a crash loses); Kick does nothing then.
	Manual bool

	// fsync, if set, replaces the store's fsync (tests inject delays and
	// failures with it).
	fsync func() error
}

// Committer batches concurrent writers into one Badger write and one fsync,
// and releases each writer only after its batch is durable. It is safe for
// concurrent use.
type Committer struct {
	store *Store
	cfg   CommitterConfig
	kick  chan struct{} // capacity 1: "there is work"
	stop  chan struct{}
	done  chan struct{}

	// gate makes "change state, then Submit" atomic with respect to cutting a
	// batch: Admit holds it shared until released; the committer holds it
	// exclusively while it swaps batches and runs Prepare. So Prepare sees a
	// state change exactly when the batch also holds the caller's mutations,
	// and a counter can never become durable before the claim that counted it.
	gate sync.RWMutex

	mu      sync.Mutex // protects cur, writing, lastSeq and closed
	cur     *batch     // collecting mutations for the next write
	writing *batch     // cut and being written; nil between writes
	lastSeq uint64     // seq of the newest batch made
	closed  bool
}

type batch struct {
	seq     uint64 // 1, 2, ... in the order batches are made, cut and written
	muts    []Mutation
	tickets int
	done    chan struct{} // closed when err is final
	err     error
}

// newBatchLocked makes the next batch. Callers hold c.mu (or own c alone).
func (c *Committer) newBatchLocked() *batch {
	c.lastSeq++
	return &batch{seq: c.lastSeq, done: make(chan struct{})}
}

// Ticket is a claim on the durability of one Submit.
type Ticket struct{ b *batch }

// Seq is the sequence number of the ticket's batch, for Committer.Done.
func (t Ticket) Seq() uint64 { return t.b.seq }

// Done is closed when the batch holding the submission is durable or failed.
func (t Ticket) Done() <-chan struct{} { return t.b.done }

// Wait blocks until the submission is durable and returns the batch's error,
// or ctx's error if ctx ends first (the write may still land).
func (t Ticket) Wait(ctx context.Context) error {
	select {
	case <-t.b.done:
		return t.b.err
	case <-ctx.Done():
		return fmt.Errorf("wait for group commit: %w", ctx.Err())
	}
}

// NewCommitter starts a committer writing to s. Stop it with Close.
func NewCommitter(s *Store, cfg CommitterConfig) *Committer {
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 1_000_000
	}
	c := &Committer{
		store: s,
		cfg:   cfg,
		kick:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	c.cur = c.newBatchLocked()
	if cfg.Manual {
		close(c.done)
		return c
	}
	go c.loop()
	return c
}

// Step cuts the next batch and writes it, on the caller's goroutine, and
// reports whether there was anything to write. Only for Manual committers.
func (c *Committer) Step() bool {
	b, muts, after := c.cut(true)
	if b == nil {
		return false
	}
	work := len(muts) > 0 || b.tickets > 0
	c.commit(b, muts, after)
	return work
}

// cut swaps in a fresh batch (unless stopping) and gathers the old one's
// mutations with Prepare's, holding the admission gate.
func (c *Committer) cut(fresh bool) (*batch, []Mutation, func(error)) {
	c.gate.Lock()
	defer c.gate.Unlock()
	c.mu.Lock()
	b := c.cur
	if fresh {
		if c.closed {
			c.mu.Unlock()
			return nil, nil, nil
		}
		c.cur = c.newBatchLocked()
	}
	c.writing = b
	c.mu.Unlock()
	muts, after := c.prepare(b, nil)
	return b, muts, after
}

// Admit reserves room for n mutations in the next batch and holds that batch
// open until release is called: the caller changes the state Prepare reads,
// calls Submit, then release. It fails with ErrOverloaded when the next batch
// already holds MaxPending mutations, or ErrClosed. Do not wait for a Ticket
// before release (the batch cannot be cut while it is held).
func (c *Committer) Admit(n int) (release func(), err error) {
	c.gate.RLock()
	c.mu.Lock()
	switch {
	case c.closed:
		err = ErrClosed
	case len(c.cur.muts)+n > c.cfg.MaxPending && n > 0:
		err = ErrOverloaded
	}
	c.mu.Unlock()
	if err != nil {
		c.gate.RUnlock()
		return nil, err
	}
	return c.gate.RUnlock, nil
}

// Next is the ticket of the batch that admitted callers are filling: between
// Admit and release it names the batch their state changes and Submits land
// in (the batch cannot be cut meanwhile), so its Done channel tells when
// those changes are durable without a Submit of their own.
func (c *Committer) Next() Ticket {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Ticket{c.cur}
}

// Done is the Done channel of batch seq (Ticket.Seq) while that batch is not
// final yet, and nil once it is (durable, or failed).
func (c *Committer) Done(seq uint64) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.cur.seq == seq:
		return c.cur.done
	case c.writing != nil && c.writing.seq == seq:
		return c.writing.done
	}
	return nil // batches are written in order: an older one is final
}

// Submit adds muts to the next batch. The returned Ticket is released when
// that batch is durable. Submit with no mutations still gets a ticket for the
// next batch, which is how a caller waits for state it handed to Prepare.
// Submit does not check MaxPending; callers that add load call Admit first.
func (c *Committer) Submit(muts ...Mutation) (Ticket, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return Ticket{}, ErrClosed
	}
	b := c.cur
	b.muts = append(b.muts, muts...)
	b.tickets++
	c.mu.Unlock()
	c.Kick()
	return Ticket{b}, nil
}

// Kick tells the committer there is work for Prepare even though nothing was
// submitted (async writers that do not wait).
func (c *Committer) Kick() {
	if c.cfg.Manual {
		return
	}
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Flush waits until everything submitted or prepared before the call is durable.
func (c *Committer) Flush(ctx context.Context) error {
	t, err := c.Submit()
	if err != nil {
		return err
	}
	return t.Wait(ctx)
}

// Close writes what is pending, stops the committer and returns the error of
// that last batch. Later Submits fail with ErrClosed.
func (c *Committer) Close() error {
	c.gate.Lock() // wait for admitted callers to Submit
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.gate.Unlock()
		<-c.done
		return nil
	}
	c.closed = true
	last := c.cur
	c.mu.Unlock()
	c.gate.Unlock()
	if c.cfg.Manual {
		_, muts, after := c.cut(false)
		c.commit(last, muts, after)
		return last.err
	}
	close(c.stop)
	<-c.done
	return last.err
}

func (c *Committer) loop() {
	defer close(c.done)
	for {
		stopping := false
		select {
		case <-c.kick:
		case <-c.stop:
			stopping = true
		}
		b, muts, after := c.cut(!stopping)
		if b == nil { // closed between the kick and the cut: this is the last batch
			b, muts, after = c.cut(false)
			stopping = true
		}
		c.commit(b, muts, after)
		if stopping {
			return
		}
	}
}

// prepare gathers b's mutations and what Prepare adds. The caller holds the gate.
func (c *Committer) prepare(b *batch, scratch []Mutation) ([]Mutation, func(error)) {
	muts := append(scratch, b.muts...)
	if c.cfg.Prepare == nil {
		return muts, func(error) {}
	}
	return c.cfg.Prepare(muts)
}

// commit writes muts, syncs, and releases b's tickets.
func (c *Committer) commit(b *batch, muts []Mutation, after func(error)) []Mutation {
	st := BatchStats{Mutations: len(muts), Tickets: b.tickets}
	if len(muts) > 0 {
		start := time.Now()
		st.Err = c.write(muts)
		st.Write = time.Since(start)
		switch {
		case st.Err != nil:
		case c.cfg.fsync == nil && c.store.syncWrites:
			st.Sync = st.Write // Badger fsynced inside the write
		default:
			start = time.Now()
			if err := c.sync(); err != nil {
				st.Err = fmt.Errorf("fsync batch: %w", err)
			}
			st.Sync = time.Since(start)
		}
	}
	after(st.Err)
	b.err = st.Err
	close(b.done)
	c.mu.Lock()
	if c.writing == b {
		c.writing = nil
	}
	c.mu.Unlock()
	if c.cfg.Observe != nil && (len(muts) > 0 || b.tickets > 0) {
		c.cfg.Observe(st)
	}
	clear(muts) // drop references to values before reusing the slice
	return muts
}

// sync makes everything written to the store so far durable (an in-memory
// store, or a test's fsync hook; a store on disk has fsynced each write).
//
// The committer writes a batch only after the previous batch's fsync has
// returned; it does not overlap them. Badger's DB.Sync syncs the write-ahead
// log of the active memtable alone, so a write of batch N+1 that filled and
// rotated the memtable before N's Sync took hold would leave N in a log that
// Sync never touches, and N would be acknowledged without being on disk.
func (c *Committer) sync() error {
	if c.cfg.fsync != nil {
		return c.cfg.fsync()
	}
	return c.store.db.Sync()
}

func (c *Committer) write(muts []Mutation) error { return c.store.write(muts) }

// write hands muts to Badger as one write batch.
func (s *Store) write(muts []Mutation) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	n := 0
	for _, m := range muts {
		n += len(m.Key) + len(m.Value)
		var err error
		switch {
		case m.Delete:
			err = wb.Delete(m.Key)
		case m.TTL > 0:
			err = wb.SetEntry(badger.NewEntry(m.Key, m.Value).WithTTL(m.TTL))
		default:
			err = wb.Set(m.Key, m.Value)
		}
		if err != nil {
			return fmt.Errorf("write batch of %d: %w", len(muts), err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("write batch of %d: %w", len(muts), err)
	}
	s.advisor.wrote(n)
	return nil
}
