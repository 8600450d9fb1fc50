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

	// onDurable, if set, is called on the commit goroutine with the entries
	// whose durable state a batch advanced (replication ships only durable
	// state). They are in the table: none can be evicted before its batch
	// is durable, and eviction runs on the commit goroutine too.
	onDurable func([]*counterEntry)
	// ttl, if set, is how long Badger keeps a key's state (0: forever); a
	// negative ttl means the key has expired and is not written any more.
	ttl func(k crdt.Key, nowMs int64) time.Duration
	// now is the node's clock, for ttl.
	now func() time.Time
	// self is this node's replica ID: its increments take the lock-free
	// path (counterEntry.pending).
	self crdt.ReplicaID
	// log is the node's counter log (shared with its unique-viewer table),
	// used by Prepare alone; nil writes every state to its own entry.
	log *counterLog

	// names shares the Event strings of time-bucket keys between entries.
	names nameCache

	// capacity is the most entries the table keeps in memory (0: no
	// bound); beyond it, Prepare evicts clean ones (evict).
	capacity int
	count    atomic.Int64  // entries in the table
	inserted atomic.Int64  // entries inserted since the last sweep
	evicted  atomic.Uint64 // entries evicted since the table was made
	removed  atomic.Uint64 // entries evicted or expired since the table was made
	// queue holds the entries in the order the sweep visits them (only
	// with a capacity): a second-chance FIFO, in an order that depends on
	// nothing but the order of inserts, so that the simulator's runs
	// repeat exactly.
	queueMu sync.Mutex // protects queue
	queue   entryQueue
	// onEvict, if set, is called (on the committer goroutine, before the
	// entry leaves the table) with the key of each evicted entry.
	onEvict func(crdt.Key)
}

type counterShard struct {
	mu sync.RWMutex // protects m and gen
	m  map[crdt.Key]*counterEntry
	// gen counts the times entries left m (evicted or expired): a state
	// read from Badger while gen did not change is no older than any entry
	// that left (insert).
	gen uint64
}

// counterEntry is one counter. Writers hold mu, except this node's own
// increments, which take no lock: a hot key taking every view of a viral
// video does not serialise its writers on mu (issue 9). They add to pending,
// which whoever next holds mu folds into live (foldLocked) before reading
// or changing it. Readers load view without locking.
//
// Eviction: an entry whose every change is durable in its own Badger entry
// can leave memory (counterTable.evict); it is then flagged evicted, and a
// path that resolved it before taking the admission gate resolves its key
// again (Node.reresolve, counterTable.merge).
//
// Memory: a node holds an entry for every counter and time bucket it has
// touched, four per video, so an entry is kept small (80 bytes, a Go size
// class). States are shared copy-on-write: the durable state in view is
// immutable, live is the same state while nothing is ahead of it (the
// common, idle case), and a batch takes live without copying it; the next
// change copies it first (mutableLive). An idle counter holds one state.
type counterEntry struct {
	key crdt.Key

	mu sync.Mutex // protects live, liveOwned and the replacing of view's state
	// liveOwned reports that live is this entry's own copy, referenced by
	// neither view nor a batch, which may change in place.
	liveOwned bool
	// inLog reports that a state of this counter is in the counter log and
	// no checkpoint that covers it is durable yet: its own Badger entry may
	// be behind, so it must not be evicted. Committer goroutine only.
	inLog bool
	// logEpoch is the counter log's stamp of the epoch that last logged
	// the counter, or 0 (counterLog.epoch). Committer goroutine only.
	logEpoch uint8
	flags    atomic.Uint32 // flagDirty, flagUsed, flagEvicted
	// live is every applied increment, durable or not, but pending. It is
	// never nil; unless liveOwned, it is shared and must not change.
	live *crdt.PNCounter

	pending   atomic.Uint64 // this node's increments not folded into live yet
	pendingMs atomic.Int64  // the newest time of those (stored before pending grows)

	view durableView // the state known to be on disk, for lock-free reads
}

// Bits of counterEntry.flags.
const (
	// flagDirty: live (or pending) is ahead of what was last handed to a
	// batch.
	flagDirty = 1 << iota
	// flagUsed: the entry was resolved or changed since the last eviction
	// sweep passed it (its second chance).
	flagUsed
	// flagEvicted: the entry has left the table; whoever holds it must
	// resolve its key again before changing it. Set with mu held and the
	// admission gate held exclusively; never cleared.
	flagEvicted
)

// durableView holds a counter's durable state. A state stored in it is
// never changed again (writers holding the entry's mu replace it), so a
// reader that loads it without a lock sees one whole state: value and
// lastUpdated always come from the same batch.
type durableView struct {
	p atomic.Pointer[crdt.PNCounter] // never nil once the entry is in the table
}

// countView is the read-only summary of a durable state.
type countView struct {
	value       uint64
	compensated uint64 // Σ N: counts taken back (double counts across regions)
	lastUpdated int64  // unix ms, 0 if never
}

// state is the durable state; callers must not change it.
func (v *durableView) state() *crdt.PNCounter { return v.p.Load() }

// Load summarises the durable state, without locking.
func (v *durableView) Load() countView {
	st := v.p.Load()
	if st == nil {
		return countView{}
	}
	return countView{value: st.Value(), compensated: st.N.Value(), lastUpdated: st.LastUpdated()}
}

// emptyState is the shared, immutable state of a counter with no slots: a
// new counter holds it until its first change.
var emptyState = &crdt.PNCounter{}

// newCounterTable returns a table that holds at most capacity entries
// (0: no bound) once Prepare has evicted.
func newCounterTable(capacity int) *counterTable {
	t := &counterTable{seed: maphash.MakeSeed(), capacity: capacity}
	t.names.seed = maphash.MakeSeed()
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
	e, _ := t.find(k)
	return e
}

// find returns the entry for k if it is in memory, and the generation of
// k's shard to pass to insert.
func (t *counterTable) find(k crdt.Key) (*counterEntry, uint64) {
	s := t.shard(k)
	s.mu.RLock()
	e, gen := s.m[k], s.gen
	s.mu.RUnlock()
	return e, gen
}

// load returns k's entry, resolving a miss with read: the state stored for
// k, and whether to hold it in memory (false: load returns nil). A state
// read while an entry of k's shard left memory may be older than that entry
// was, so it is read again.
func (t *counterTable) load(k crdt.Key, read func() (c crdt.PNCounter, hold bool, err error)) (*counterEntry, error) {
	for {
		e, gen := t.find(k)
		if e != nil {
			e.touch()
			return e, nil
		}
		c, hold, err := read()
		if err != nil || !hold {
			return nil, err
		}
		if e, ok := t.insert(k, c, gen); ok {
			return e, nil
		}
	}
}

// preload adds k's stored state c, read after the table's removals were
// since, to the table, if it has room and k is not in it. It adds nothing
// once any entry has left the table since: c might be older than it was.
func (t *counterTable) preload(k crdt.Key, c crdt.PNCounter, since uint64) {
	if t.capacity > 0 && t.len() >= t.capacity {
		return
	}
	// An entry that left k's shard before find is counted in removals
	// (counted under the shard's lock); one after, in gen.
	_, gen := t.find(k)
	if t.removals() != since {
		return
	}
	t.insert(k, c, gen)
}

// removals counts the entries that left the table, evicted or expired.
func (t *counterTable) removals() uint64 { return t.removed.Load() }

// insert adds an entry for k holding the durable state c, read from Badger
// when k's shard was at generation gen (find), unless another goroutine got
// there first; it returns the entry that is in the table. It inserts
// nothing, and ok is false, if an entry left k's shard since gen: it might
// have been k's, newer than c.
func (t *counterTable) insert(k crdt.Key, c crdt.PNCounter, gen uint64) (e *counterEntry, ok bool) {
	s := t.shard(k)
	s.mu.Lock()
	if e, ok := s.m[k]; ok {
		s.mu.Unlock()
		return e, true
	}
	if s.gen != gen {
		s.mu.Unlock()
		return nil, false
	}
	if k.IsBucket() {
		k.Event = t.names.intern(k.Event)
	}
	st := emptyState
	if !c.IsZero() {
		st = new(crdt.PNCounter)
		*st = c // c's slots are ours from here (callers drop c), as live's were
	}
	e = &counterEntry{key: k, live: st}
	e.flags.Store(flagUsed)
	e.view.p.Store(st)
	s.m[k] = e
	s.mu.Unlock()
	t.count.Add(1)
	t.inserted.Add(1)
	if t.capacity > 0 {
		// After the shard's lock: evict takes queueMu, then shard locks.
		t.queueMu.Lock()
		t.queue.push(e)
		t.queueMu.Unlock()
	}
	return e, true
}

// touch flags e as used, sparing it the next eviction sweep.
func (e *counterEntry) touch() {
	if e.flags.Load()&flagUsed == 0 {
		e.flags.Or(flagUsed)
	}
}

// isEvicted reports whether e has left the table.
func (e *counterEntry) isEvicted() bool { return e.flags.Load()&flagEvicted != 0 }

// sweepDue reports whether the table holds more entries than its capacity
// and has had sweepSlack inserts since its last sweep: reads alone then ask
// for a batch to be cut, to evict (once per sweepSlack inserts, not per
// read: entries the counter log pins can keep a table over its capacity).
func (t *counterTable) sweepDue() bool {
	return t.capacity > 0 && t.count.Load() > int64(t.capacity) && t.inserted.Load() >= sweepSlack
}

// len is the number of counters in memory.
func (t *counterTable) len() int { return int(t.count.Load()) }

// raiseTo sets a to v unless it already holds more, and returns what it
// then holds: a maximum kept without a lock.
func raiseTo(a *atomic.Int64, v int64) int64 {
	for {
		cur := a.Load()
		if v <= cur {
			return cur
		}
		if a.CompareAndSwap(cur, v) {
			return v
		}
	}
}

// increment adds n views to replica r's slot of e and queues e for the next
// batch. This node's own increments take no lock.
func (t *counterTable) increment(e *counterEntry, r crdt.ReplicaID, n uint64, nowMs int64) {
	if r == t.self && r != 0 {
		raiseTo(&e.pendingMs, nowMs)
		e.pending.Add(n)
		t.enqueue(e.markDirty(), e)
		return
	}
	e.mu.Lock()
	e.mutableLive().Increment(r, n, nowMs)
	e.mu.Unlock()
	t.enqueue(e.markDirty(), e)
}

// foldLocked moves the pending increments into live. Callers hold e.mu.
func (t *counterTable) foldLocked(e *counterEntry) {
	if n := e.pending.Swap(0); n != 0 {
		e.mutableLive().Increment(t.self, n, e.pendingMs.Load())
	}
}

// mutableLive returns live for changing in place, first copying it if it is
// shared (with view or a batch). Callers hold e.mu.
func (e *counterEntry) mutableLive() *crdt.PNCounter {
	if !e.liveOwned {
		c := e.live.Clone()
		e.live, e.liveOwned = &c, true
	}
	return e.live
}

// decrement adds 1 to replica r's N slot of e (an unlike, or a lost claim:
// see exactlyonce.go) and queues e for the next batch.
func (t *counterTable) decrement(e *counterEntry, r crdt.ReplicaID, nowMs int64) {
	e.mu.Lock()
	e.mutableLive().Decrement(r, 1, nowMs)
	e.mu.Unlock()
	t.enqueue(e.markDirty(), e)
}

// markDirty flags e dirty (and used) and reports whether it must join the
// dirty list (it was clean).
func (e *counterEntry) markDirty() bool { return e.flags.Or(flagDirty|flagUsed)&flagDirty == 0 }

func (t *counterTable) enqueue(queue bool, e *counterEntry) {
	if queue {
		t.dirtyMu.Lock()
		t.dirty = append(t.dirty, e)
		t.dirtyMu.Unlock()
	}
}

// snapshot is a state handed to a batch, published once the batch is
// durable. The state is shared with the entry and never changes.
type snapshot struct {
	e     *counterEntry
	state *crdt.PNCounter
}

// prepare is the counters' part of the committer's Prepare hook: it appends
// the current state of every dirty counter to dst, in counter log records
// (counterlog.go), and returns the function that publishes those states when
// the batch is durable (or re-queues them if it failed).
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
	// prev is the state taken from the previous entry, prevV its encoding.
	// An event increments its counter and its three buckets one after the
	// other, so for a video first seen in this minute the four are queued
	// together and hold equal states: they share one (states are immutable
	// once taken), encoded once.
	var prev *crdt.PNCounter
	var prevV []byte
	for _, e := range dirty {
		e.flags.And(^uint32(flagDirty)) // before the fold: a later increment queues e again
		e.mu.Lock()
		t.foldLocked(e)
		st := e.live
		if prev != nil && st != prev && st.Equal(*prev) {
			st = prev
			e.live = st
		}
		e.liveOwned = false // shared with the batch from now on: the next change copies it
		e.mu.Unlock()
		ttl, keep := t.keyTTL(e, nowMs)
		if !keep {
			continue // expired: nothing needs it any more
		}
		v, err := prevV, error(nil)
		if st != prev {
			v, err = st.MarshalBinary()
			prev, prevV = st, v
		}
		if err != nil {
			prev, prevV = nil, nil
			encErr = fmt.Errorf("encode counter %s: %w", e.key, err)
			t.requeue(e) // keep it for the next batch rather than drop it
			continue
		}
		var expiresMs int64
		if ttl > 0 {
			expiresMs = nowMs + ttl.Milliseconds()
		}
		dst = t.log.put(dst, e.key, v, expiresMs, ttl, loggedCounter{t, e})
		snaps = append(snaps, snapshot{e, st})
	}
	if len(snaps) == 0 {
		return dst, func(error) {}, encErr
	}
	after := func(err error) {
		if err != nil {
			for _, s := range snaps {
				t.requeue(s.e)
			}
			return
		}
		var changed []*counterEntry
		for _, s := range snaps {
			s.e.mu.Lock()
			if s.e.advanceDurable(s.state) {
				changed = append(changed, s.e)
			}
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
	st := e.live
	e.liveOwned = false // shared with the batch: the next change copies it
	e.mu.Unlock()
	if m, err = store.CounterMutation(e.key, *st); err != nil {
		return store.Mutation{}, false, err
	}
	m.TTL = ttl
	return m, true, nil
}

// merge folds a remote state into e and queues e for the next batch if that
// changed anything; it reports whether it did. It takes no admission gate:
// ok is false, and nothing changed, if e has been evicted (the caller
// resolves its key again).
func (t *counterTable) merge(e *counterEntry, st crdt.PNCounter) (changed, ok bool) {
	e.mu.Lock()
	if e.isEvicted() {
		e.mu.Unlock()
		return false, false
	}
	t.foldLocked(e)
	// A state already covered (a resend, an echo) changes nothing: test
	// before copying a shared live state to merge into.
	changed = !e.live.Covers(st) && e.mutableLive().Merge(st)
	e.mu.Unlock()
	t.enqueue(changed && e.markDirty(), e)
	return changed, true
}

// remove drops from memory every counter whose key matches expired and
// reports how many went.
func (t *counterTable) remove(expired func(crdt.Key) bool) int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		before := n
		for k, e := range s.m {
			if expired(k) {
				e.flags.Or(flagEvicted) // the eviction queue drops it
				delete(s.m, k)
				n++
			}
		}
		if n > before {
			s.gen++
			t.removed.Add(uint64(n - before)) // before the unlock: see preload
		}
		s.mu.Unlock()
	}
	t.count.Add(-int64(n))
	if n > 0 && t.capacity > 0 {
		// Their places in the queue too: a table under its capacity never
		// sweeps it.
		t.queueMu.Lock()
		t.queue.drop((*counterEntry).isEvicted)
		t.queueMu.Unlock()
	}
	return n
}

// Eviction sweeps: how many entries a sweep examines, at most, per entry
// inserted since the last one, and besides. Two per insert: a sweep passes
// each entry spared once (used) and evicts it the next time, so it keeps up
// with inserts as long as most entries it passes are clean.
const (
	sweepPerInsert = 2
	sweepSlack     = 256
)

// evict drops entries from memory while the table holds more than its
// capacity. An entry goes if every change to it is durable in its own Badger
// entry, where the next lookup reads it back: it is not dirty, has no
// pending increments, its live state is its durable one and no log record
// holds a state its entry lacks (inLog). An entry used since the sweep last
// passed it is spared once (its second chance, CLOCK's rule): the sweep
// evicts entries not resolved, read or changed for the longest, roughly.
// The work is bounded by the entries inserted since the last sweep, so that
// a table pinned above its capacity (by entries the log holds) costs each
// batch little.
//
// It runs in Prepare, on the committer goroutine, with the admission gate
// held exclusively: no ingest is between resolving an entry and changing
// it, and those that resolved one before taking the gate check it again
// after (Node.reresolve). It returns how many entries it evicted.
func (t *counterTable) evict() int {
	inserted := t.inserted.Swap(0)
	over := t.count.Load() - int64(t.capacity)
	if t.capacity <= 0 || over <= 0 {
		return 0
	}
	budget := sweepPerInsert*inserted + sweepSlack
	n := 0
	t.queueMu.Lock()
	defer t.queueMu.Unlock()
	for ; budget > 0 && int64(n) < over; budget-- {
		e, ok := t.queue.pop()
		if !ok {
			break
		}
		s := t.shard(e.key)
		s.mu.Lock()
		if e.isEvicted() {
			s.mu.Unlock()
			continue // expired: it left the table already
		}
		if !t.evictable(e) {
			s.mu.Unlock()
			t.queue.push(e)
			continue
		}
		if t.onEvict != nil {
			t.onEvict(e.key)
		}
		delete(s.m, e.key)
		s.gen++
		t.removed.Add(1) // before the unlock: see preload
		s.mu.Unlock()
		n++
	}
	t.count.Add(-int64(n))
	t.evicted.Add(uint64(n))
	return n
}

// entryQueue is a FIFO of entries.
type entryQueue struct {
	q    []*counterEntry
	head int // q[head:] are queued
}

func (q *entryQueue) push(e *counterEntry) { q.q = append(q.q, e) }

// drop removes the entries gone reports, keeping the others' order.
func (q *entryQueue) drop(gone func(*counterEntry) bool) {
	kept := q.q[:0]
	for _, e := range q.q[q.head:] {
		if !gone(e) {
			kept = append(kept, e)
		}
	}
	clear(q.q[len(kept):])
	q.q, q.head = kept, 0
}

func (q *entryQueue) pop() (*counterEntry, bool) {
	if q.head == len(q.q) {
		return nil, false
	}
	e := q.q[q.head]
	q.q[q.head] = nil
	q.head++
	if q.head >= 1024 && 2*q.head >= len(q.q) {
		// Half of the slice is spent: move the queue down.
		n := copy(q.q, q.q[q.head:])
		clear(q.q[n:])
		q.q, q.head = q.q[:n], 0
	}
	return e, true
}

// evictable reports whether e may leave the table, and if it may, flags it
// evicted; it clears a used flag instead (its second chance). Callers hold
// e's shard's lock and the admission gate exclusively.
func (t *counterTable) evictable(e *counterEntry) bool {
	f := e.flags.Load()
	if f&flagUsed != 0 {
		e.flags.And(^uint32(flagUsed))
		return false
	}
	if f&flagDirty != 0 || e.inLog || e.pending.Load() != 0 {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	// Under mu: a merge (which takes no gate) changes live under it, and
	// marks e dirty only after.
	if e.live != e.view.state() || e.flags.Load()&(flagDirty|flagUsed) != 0 {
		return false
	}
	e.flags.Or(flagEvicted)
	return true
}

// liveEquals reports whether e's live state is exactly st.
func (t *counterTable) liveEquals(e *counterEntry, st crdt.PNCounter) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	t.foldLocked(e)
	return e.live.Equal(st)
}

// durableNet is ΣP − ΣN of e's durable state, wrapped into a uint64 (cast
// to int64 for the signed value), without copying the state or locking.
func (e *counterEntry) durableNet() uint64 {
	st := e.view.state()
	return st.P.Value() - st.N.Value()
}

// durableState returns a copy of e's durable state.
func (e *counterEntry) durableState() crdt.PNCounter {
	return e.view.state().Clone()
}

// advanceDurable folds st, a state written by a batch that is now durable,
// into the durable state and reports whether that changed it. st is shared
// from here on and must not change. Callers hold e.mu.
func (e *counterEntry) advanceDurable(st *crdt.PNCounter) bool {
	d := e.view.state()
	switch {
	case d.Covers(*st):
		return false
	case st.Covers(*d):
		// The usual case (batches are durable in order): st becomes the
		// durable state as it is, shared with live if nothing changed
		// since the batch took it.
		e.view.p.Store(st)
	default:
		m := d.Clone()
		m.Merge(*st)
		e.view.p.Store(&m)
	}
	return true
}

func (t *counterTable) requeue(e *counterEntry) {
	t.enqueue(e.markDirty(), e)
}

// liveValue is the value including increments not yet durable (async acks).
func (t *counterTable) liveValue(e *counterEntry) uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	t.foldLocked(e)
	return e.live.Value()
}

// nameCacheSlots is the size of a nameCache: room for the names of the
// current minute, hour and day of many event types, and for the names a
// replicated or reloaded series of buckets brings in at a time.
const nameCacheSlots = 4096

// nameCache interns the Event strings of time-bucket keys ("#view/m/<minute>"):
// every video viewed in the same minute has a bucket of that name, and one
// shared copy saves a string per bucket held. It is a direct-mapped cache of
// recently seen names, bounded and lock-free: a miss costs only the copy it
// would have saved. It is safe for concurrent use.
type nameCache struct {
	seed  maphash.Seed
	slots [nameCacheSlots]atomic.Pointer[string]
}

// intern returns a string equal to s, shared if the cache holds one.
func (c *nameCache) intern(s string) string {
	slot := &c.slots[maphash.String(c.seed, s)%nameCacheSlots]
	if p := slot.Load(); p != nil && *p == s {
		return *p
	}
	p := new(string)
	*p = s
	slot.Store(p)
	return s
}

// internBytes is intern of string(b), without a copy of b when the cache
// holds the name.
func (c *nameCache) internBytes(b []byte) string {
	slot := &c.slots[maphash.Bytes(c.seed, b)%nameCacheSlots]
	if p := slot.Load(); p != nil && *p == string(b) {
		return *p
	}
	p := new(string)
	*p = string(b)
	slot.Store(p)
	return *p
}

// bucketKey is b.Key() with its Event string shared through the name cache:
// the write path resolves three buckets per event without allocating.
func (t *counterTable) bucketKey(b crdt.BucketKey) crdt.Key {
	var buf [96]byte
	return crdt.Key{Video: b.Video, Event: t.names.internBytes(b.AppendEvent(buf[:0]))}
}
