package region

import (
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/store"
)

const counterShards = 64

// counterTable is the in-memory state of every counter this node has touched
// since it started, sharded to keep lock contention off the read path.
type counterTable struct {
	seed   maphash.Seed
	shards [counterShards]counterShard

	dirtyMu sync.Mutex      // protects dirty
	dirty   []*counterEntry // entries with increments not yet handed to a batch

	// onDurable, if set, is called on the commit goroutine with the keys whose
	// durable state a batch advanced (replication ships only durable state).
	onDurable func([]crdt.Key)
	// ttl, if set, is how long Badger keeps a key's state (0: forever); a
	// negative ttl means the key has expired and is not written any more.
	ttl func(k crdt.Key, nowMs int64) time.Duration
	// now is the node's clock, for ttl.
	now func() time.Time
	// self is this node's replica ID: its increments take the lock-free
	// path (counterEntry.pending).
	self crdt.ReplicaID
	// seq names counter log records (store.CounterLog); nil writes every
	// state to its own entry.
	seq func() uint64
	log *counterLog // the counter log's checkpoints; used by prepare alone
}

type counterShard struct {
	mu sync.RWMutex // protects m
	m  map[crdt.Key]*counterEntry
}

// counterEntry is one counter. Writers hold mu, except this node's own
// increments, which take no lock: a hot key taking every view of a viral
// video does not serialise its writers on mu (issue 9). They add to pending,
// which whoever next holds mu folds into live (foldLocked) before reading
// or changing it. Readers load view without locking.
type counterEntry struct {
	key crdt.Key

	mu      sync.Mutex     // protects live, durable
	live    crdt.PNCounter // every applied increment, durable or not, but pending
	durable crdt.PNCounter // the state known to be on disk
	dirty   atomic.Bool    // live (or pending) is ahead of what was last handed to a batch

	pending   atomic.Uint64 // this node's increments not folded into live yet
	pendingMs atomic.Int64  // the newest time of those (stored before pending grows)

	view atomic.Pointer[countView] // durable value, for lock-free reads
}

// countView is the published, read-only summary of a durable state.
type countView struct {
	value       uint64
	compensated uint64 // Σ N: counts taken back (double counts across regions)
	lastUpdated int64  // unix ms, 0 if never
}

func newCounterTable() *counterTable {
	t := &counterTable{seed: maphash.MakeSeed(), log: newCounterLog()}
	for i := range t.shards {
		t.shards[i].m = make(map[crdt.Key]*counterEntry)
	}
	return t
}

func (t *counterTable) shard(k crdt.Key) *counterShard {
	var h maphash.Hash
	h.SetSeed(t.seed)
	h.WriteString(k.Video)
	h.WriteByte(0)
	h.WriteString(k.Event)
	return &t.shards[h.Sum64()%counterShards]
}

// lookup returns the entry for k if it is in memory.
func (t *counterTable) lookup(k crdt.Key) *counterEntry {
	s := t.shard(k)
	s.mu.RLock()
	e := s.m[k]
	s.mu.RUnlock()
	return e
}

// insert adds an entry for k holding the durable state c, unless another
// goroutine got there first; it returns the entry that is in the table.
func (t *counterTable) insert(k crdt.Key, c crdt.PNCounter) *counterEntry {
	s := t.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[k]; ok {
		return e
	}
	e := &counterEntry{key: k, live: c, durable: c.Clone()}
	e.publish()
	s.m[k] = e
	return e
}

// len is the number of counters in memory.
func (t *counterTable) len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}

// increment adds n views to replica r's slot of e and queues e for the next
// batch. This node's own increments take no lock.
func (t *counterTable) increment(e *counterEntry, r crdt.ReplicaID, n uint64, nowMs int64) {
	if r == t.self && r != 0 {
		for {
			ms := e.pendingMs.Load()
			if ms >= nowMs || e.pendingMs.CompareAndSwap(ms, nowMs) {
				break
			}
		}
		e.pending.Add(n)
		t.enqueue(e.markDirty(), e)
		return
	}
	e.mu.Lock()
	e.live.Increment(r, n, nowMs)
	e.mu.Unlock()
	t.enqueue(e.markDirty(), e)
}

// foldLocked moves the pending increments into live. Callers hold e.mu.
func (t *counterTable) foldLocked(e *counterEntry) {
	if n := e.pending.Swap(0); n != 0 {
		e.live.Increment(t.self, n, e.pendingMs.Load())
	}
}

// decrement adds 1 to replica r's N slot of e (an unlike, or a lost claim:
// see exactlyonce.go) and queues e for the next batch.
func (t *counterTable) decrement(e *counterEntry, r crdt.ReplicaID, nowMs int64) {
	e.mu.Lock()
	e.live.Decrement(r, 1, nowMs)
	e.mu.Unlock()
	t.enqueue(e.markDirty(), e)
}

// markDirty flags e dirty and reports whether it must join the dirty list
// (it was clean).
func (e *counterEntry) markDirty() bool { return !e.dirty.Swap(true) }

func (t *counterTable) enqueue(queue bool, e *counterEntry) {
	if queue {
		t.dirtyMu.Lock()
		t.dirty = append(t.dirty, e)
		t.dirtyMu.Unlock()
	}
}

// snapshot is a state handed to a batch, published once the batch is durable.
type snapshot struct {
	e     *counterEntry
	state crdt.PNCounter
}

// prepare is the committer's Prepare hook: it appends the current state of
// every dirty counter to dst, in counter log records (counterlog.go), with
// the checkpoint writes and log deletions due, and returns the function that
// publishes those states when the batch is durable (or re-queues them if it
// failed).
func (t *counterTable) prepare(dst []store.Mutation) ([]store.Mutation, func(error), error) {
	t.dirtyMu.Lock()
	dirty := t.dirty
	t.dirty = nil
	t.dirtyMu.Unlock()
	var nowMs int64
	if t.now != nil {
		nowMs = t.now().UnixMilli()
	}
	snaps := make([]snapshot, 0, len(dirty))
	var encErr error
	var log store.CounterLog
	for _, e := range dirty {
		e.dirty.Store(false) // before the fold: a later increment queues e again
		e.mu.Lock()
		t.foldLocked(e)
		st := e.live.Clone()
		e.mu.Unlock()
		ttl, keep := t.keyTTL(e, nowMs)
		if !keep {
			continue // expired: nothing needs it any more
		}
		v, err := st.MarshalBinary()
		if err != nil {
			encErr = fmt.Errorf("encode counter %s: %w", e.key, err)
			t.requeue(e) // keep it for the next batch rather than drop it
			continue
		}
		var expiresMs int64
		if ttl > 0 {
			expiresMs = nowMs + ttl.Milliseconds()
		}
		if t.seq != nil && log.Add(e.key, v, expiresMs) {
			t.log.logged(e)
		} else {
			dst = append(dst, store.Mutation{Key: store.CounterKey(e.key), Value: v, TTL: ttl})
		}
		snaps = append(snaps, snapshot{e, st})
	}
	var drained []*counterEntry
	var deleted [][]byte
	if t.seq != nil {
		recs := log.Mutations(t.seq)
		dst = append(dst, recs...)
		t.log.wrote(recs)
		drained = t.log.takeDrain(len(snaps))
		for _, e := range drained {
			if m, ok, err := t.checkpoint(e, nowMs); err != nil {
				encErr = err
			} else if ok {
				dst = append(dst, m)
			}
		}
		deleted = t.log.takeDeletes()
		dst = append(dst, store.CounterLogDeletes(deleted)...)
	}
	if len(snaps)+len(drained)+len(deleted) == 0 {
		return dst, func(error) {}, encErr
	}
	after := func(err error) {
		if t.seq != nil {
			t.log.done(err, drained, deleted)
		}
		if err != nil {
			for _, s := range snaps {
				t.requeue(s.e)
			}
			return
		}
		var changed []crdt.Key
		for _, s := range snaps {
			s.e.mu.Lock()
			if s.e.durable.Merge(s.state) {
				changed = append(changed, s.e.key)
			}
			s.e.publish()
			s.e.mu.Unlock()
		}
		if t.onDurable != nil && len(changed) > 0 {
			t.onDurable(changed)
		}
	}
	return dst, after, encErr
}

// keyTTL is how long Badger keeps e's state written at nowMs (0: forever),
// and false if e has expired and is not written any more.
func (t *counterTable) keyTTL(e *counterEntry, nowMs int64) (time.Duration, bool) {
	if t.ttl == nil {
		return 0, true
	}
	ttl := t.ttl(e.key, nowMs)
	return ttl, ttl >= 0
}

// checkpoint is the write of e's state to its own entry (a counter the log
// holds): its live state, which Prepare, holding the admission gate, has
// just logged if it changed. ok is false for an expired counter.
func (t *counterTable) checkpoint(e *counterEntry, nowMs int64) (m store.Mutation, ok bool, err error) {
	ttl, keep := t.keyTTL(e, nowMs)
	if !keep {
		return store.Mutation{}, false, nil
	}
	e.mu.Lock()
	t.foldLocked(e)
	st := e.live.Clone()
	e.mu.Unlock()
	if m, err = store.CounterMutation(e.key, st); err != nil {
		return store.Mutation{}, false, err
	}
	m.TTL = ttl
	return m, true, nil
}

// merge folds a remote state into e and queues e for the next batch if that
// changed anything; it reports whether it did.
func (t *counterTable) merge(e *counterEntry, st crdt.PNCounter) bool {
	e.mu.Lock()
	t.foldLocked(e)
	changed := e.live.Merge(st)
	e.mu.Unlock()
	t.enqueue(changed && e.markDirty(), e)
	return changed
}

// remove drops from memory every counter whose key matches expired and
// reports how many went.
func (t *counterTable) remove(expired func(crdt.Key) bool) int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for k := range s.m {
			if expired(k) {
				delete(s.m, k)
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// liveEquals reports whether e's live state is exactly st.
func (t *counterTable) liveEquals(e *counterEntry, st crdt.PNCounter) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	t.foldLocked(e)
	return e.live.Equal(st)
}

// durableNet is ΣP − ΣN of e's durable state, wrapped into a uint64 (cast
// to int64 for the signed value), without copying the state.
func (e *counterEntry) durableNet() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.durable.P.Value() - e.durable.N.Value()
}

// durableState returns a copy of e's durable state.
func (e *counterEntry) durableState() crdt.PNCounter {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.durable.Clone()
}

func (t *counterTable) requeue(e *counterEntry) {
	t.enqueue(e.markDirty(), e)
}

// publish makes the durable state visible to readers. Callers hold e.mu.
func (e *counterEntry) publish() {
	e.view.Store(&countView{value: e.durable.Value(), compensated: e.durable.N.Value(), lastUpdated: e.durable.LastUpdated()})
}

// liveValue is the value including increments not yet durable (async acks).
func (t *counterTable) liveValue(e *counterEntry) uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	t.foldLocked(e)
	return e.live.Value()
}
