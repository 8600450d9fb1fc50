package region

import (
	"fmt"
	"hash/maphash"
	"maps"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/store"
)

const claimShards = 256

// claimTable holds the dedup claim sets of every live window in memory: the
// node loads them all at start (Open), keeps every claim it makes or receives
// until its window has expired (window end plus the lag budget), and so never
// reads Badger to decide a claim.
//
// Every change to a claim set happens while the committer's admission gate is
// held (Committer.Admit), and the changed key is queued for the next batch;
// the committer's Prepare hook writes the current state of every queued key,
// so a claim and the counter change it explains are durable together.
//
// The table holds no pointers for the common claim set, one claim of one
// replica: it is named by a 127-bit hash of its video, event and user
// (claimID) and held inline (claimSlot) in its window's claimSet, so
// millions of claims cost the garbage collector nothing to scan and 53 to
// 107 bytes each, the table's spare room included (88 in
// BenchmarkClaimMemory). Other sets (a peer's claim merged in, a
// compensation) are in the shard's multi map.
type claimTable struct {
	seeds    [2]maphash.Seed
	windowMs int64
	lagMs    int64
	shards   [claimShards]claimShard

	// done is the committer's Done (store.Committer.Done): the channel of a
	// batch not final yet, nil once it is. Set before the first claim.
	done func(seq uint64) <-chan struct{}

	// inEvents is set when the raw event log outlives every claim (Open,
	// claimsInEvents): a claim this node won is then not written at all,
	// because the event it counted, logged in the same batch, is its
	// record (Node.forEachStoredClaim reads it back). Otherwise won claims
	// go into claim blocks.
	inEvents bool

	// fresh holds the claims this node won since the last batch was cut,
	// each once (a key is won once); queue holds the other claim sets changed
	// since then (merged from peers, or put back by a failed batch).
	fresh keyQueue[freshClaim]
	queue keyQueue[store.ClaimKey]
}

// freshClaim is a claim this node won (claimUnqueued): its set was this node's
// claim alone, made at ingestMs, and that is what a batch writes of it. A
// merge that changes the set before the batch is cut queues the key as well,
// so the batch writes the merged set too; the two merge again when read.
type freshClaim struct {
	key      store.ClaimKey
	ingestMs int64
}

type claimShard struct {
	mu      sync.Mutex // protects windows and multi
	windows map[uint64]*claimSet
	multi   map[claimID]crdt.Claims // sets a slot cannot hold inline (claimSlot.replica 0)
	touched uint64                  // a sum of the words touch read, for nothing else
}

// claimID names a claim set: a 127-bit hash of its video, event and user
// (two maphash seeds, the last bit set so that no ID is the zero a free
// claimSet entry holds; a collision, about 2^-60 likely among 10^10 claims,
// would take one view for a repeat), and its window.
type claimID struct {
	h      [2]uint64
	window uint64
}

// claimSlot is a claim set in memory. replica and ingestMs hold the set
// when it is one claim at StageClaimed (crdt.NewClaims), as every view
// counted here leaves it; replica is 0 when the set is in claimShard.multi.
// batch, for a claim this node won, is the sequence of the group commit
// holding it (store.Ticket.Seq) until that batch is seen final: a repeat
// must not answer "already counted" for a view a crash could still lose.
type claimSlot struct {
	replica  crdt.ReplicaID
	ingestMs int64
	batch    uint64
}

func newClaimTable(windowMs, lagMs int64) *claimTable {
	t := &claimTable{seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}, windowMs: windowMs, lagMs: lagMs}
	for i := range t.shards {
		t.shards[i].windows = make(map[uint64]*claimSet)
		t.shards[i].multi = make(map[claimID]crdt.Claims)
	}
	return t
}

// expiryMs is when the claims of window w may be forgotten: the end of the
// window plus the lag budget. Every replica derives it from the key alone.
func (t *claimTable) expiryMs(w uint64) int64 { return int64(w+1)*t.windowMs + t.lagMs }

// id names k's claim set, and shard is where it lives.
func (t *claimTable) id(k store.ClaimKey) (claimID, *claimShard) {
	var id claimID
	for i := range id.h {
		var h maphash.Hash
		h.SetSeed(t.seeds[i])
		h.WriteString(k.Video)
		h.WriteByte(0)
		h.WriteString(k.Event)
		h.WriteByte(0)
		h.WriteString(k.User)
		id.h[i] = h.Sum64()
	}
	id.h[1] |= 1 // never zero: see claimEntry
	id.window = k.Window
	return id, &t.shards[id.h[0]%claimShards]
}

// getLocked returns the claim set of id and its slot. Callers hold s.mu.
func (s *claimShard) getLocked(id claimID) (crdt.Claims, claimSlot, bool) {
	var slot claimSlot
	ok := false
	if set := s.windows[id.window]; set != nil {
		slot, ok = set.get(id.h)
	}
	switch {
	case !ok:
		return crdt.Claims{}, claimSlot{}, false
	case slot.replica == 0:
		return s.multi[id], slot, true
	}
	return crdt.NewClaims(slot.replica, slot.ingestMs), slot, true
}

// putLocked stores c as the claim set of id, waiting on batch (0: none).
// Callers hold s.mu.
func (s *claimShard) putLocked(id claimID, c crdt.Claims, batch uint64) {
	slot := claimSlot{batch: batch}
	if r, ms, ok := c.Winner(); ok && r != 0 && c.Len() == 1 && c.Stage(r) == crdt.StageClaimed {
		slot.replica, slot.ingestMs = r, ms
		delete(s.multi, id)
	} else {
		s.multi[id] = c
	}
	p, _ := s.set(id.window).ref(id.h)
	*p = slot
}

// set returns window w's claimSet, made if it has none. Callers hold s.mu.
func (s *claimShard) set(w uint64) *claimSet {
	set := s.windows[w]
	if set == nil {
		set = new(claimSet)
		s.windows[w] = set
	}
	return set
}

// claimUnqueued claims k for replica self at ingestMs unless k already has
// a claim set (made here or received from a peer); a won claim is to be
// written in batch (store.Ticket.Seq; 0 with async durability, where nothing
// waits for it). When k was claimed already, synced is closed once that
// claim is durable (nil if it is). Callers hold the admission gate, so
// batch is the one the claim will be written in, and queue the claims they
// won (queueFresh) before they release it: a call's claims go to the queue
// together, with one lock of it instead of one per claim.
func (t *claimTable) claimUnqueued(k store.ClaimKey, self crdt.ReplicaID, ingestMs int64, batch uint64) (won bool, synced <-chan struct{}) {
	id, s := t.id(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	return t.claimLocked(s, id, self, ingestMs, batch)
}

// claimLocked is claimUnqueued for the claim set id of shard s. Callers
// hold s.mu.
func (t *claimTable) claimLocked(s *claimShard, id claimID, self crdt.ReplicaID, ingestMs int64, batch uint64) (won bool, synced <-chan struct{}) {
	cur, found := s.set(id.window).ref(id.h)
	if found {
		if cur.batch == 0 {
			return false, nil
		}
		if ch := t.done(cur.batch); ch != nil {
			return false, ch
		}
		cur.batch = 0 // its batch is final
		return false, nil
	}
	// A set of one claim of self at StageClaimed, held inline (putLocked);
	// an id with no slot has no multi entry either.
	*cur = claimSlot{replica: self, ingestMs: ingestMs, batch: batch}
	return true, nil
}

// claimOutcome is what claimUnqueued returned for one key (claimMany).
type claimOutcome struct {
	won    bool
	synced <-chan struct{}
}

// claimScratch is claimMany's working memory, pooled: a call of 1,000 keys
// needs 28 KB of it.
type claimScratch struct {
	ids   []claimID
	order []int32
	ends  [claimShards]int32
}

var claimScratchPool = sync.Pool{New: func() any { return new(claimScratch) }}

// claimMany is claimUnqueued for each of keys in turn, with the outcome
// of keys[i] in out[i], for a large ingest call: it takes each shard's lock
// once, and reads the table entries of a shard's keys before it decides
// them (shardOrder). Keys of one shard are decided in their order in keys,
// so a key repeated in keys is won by its first place, as it would be by
// calls of claimUnqueued one key at a time. The same contract holds.
func (t *claimTable) claimMany(keys []store.ClaimKey, self crdt.ReplicaID, ingestMs int64, batch uint64, out []claimOutcome) {
	sc := claimScratchPool.Get().(*claimScratch)
	defer claimScratchPool.Put(sc)
	sc.ids = sc.ids[:0]
	for _, k := range keys {
		id, _ := t.id(k)
		sc.ids = append(sc.ids, id)
	}
	ids := sc.ids
	sc.order = shardOrder(sc.order, sc.ends[:], len(ids), func(i int) int { return int(ids[i].h[0] % claimShards) })
	eachRun(sc.order, sc.ends[:], func(si int, run []int32) {
		s := &t.shards[si]
		s.mu.Lock()
		s.touch(ids, run)
		for _, i := range run {
			out[i].won, out[i].synced = t.claimLocked(s, ids[i], self, ingestMs, batch)
		}
		s.mu.Unlock()
	})
}

// touch reads the table entry where the probe of each of ids[run] starts,
// so that the memory reads of claimLocked's probes that follow have been
// made, together, already (shardOrder). Callers hold s.mu.
func (s *claimShard) touch(ids []claimID, run []int32) {
	var set *claimSet
	w := uint64(0)
	var sum uint64
	for _, i := range run {
		id := &ids[i]
		if set == nil || id.window != w {
			w, set = id.window, s.windows[id.window]
			if set == nil {
				continue
			}
		}
		if len(set.entries) > 0 {
			sum += set.entries[set.home(id.h)].id[0]
		}
	}
	s.touched = sum // keeps the reads from being left out
}

// queueFresh queues claims won by claimUnqueued for the next batch.
// Callers hold the admission gate they held to win them.
func (t *claimTable) queueFresh(won []freshClaim) {
	if len(won) > 0 {
		t.fresh.push(won...)
	}
}

// mergeResult is what merging a remote claim set did.
type mergeResult struct {
	changed bool // the local claim set changed (and was queued)
	adopted bool // the local set now equals the remote one (no echo back)
	// owed holds the ingest time of each claim of this node (under its
	// current or a retired replica ID) that lost and moved to
	// StageCompensated in this merge: the caller must take back one count
	// per entry, in the current ID's slots, in this batch.
	owed []int64
	// reapplied is the like transition this node made again for a lost
	// intent that is the user's latest (likeTable.merge; zero if none), at
	// reappliedMs: the caller counts it as made now, in this batch.
	reapplied   store.ClaimKey
	reappliedMs int64
}

// compensateOwn applies the claim rule to c for every replica ID in own and
// appends the ingest time of each claim it moved to StageCompensated.
func compensateOwn(c *crdt.Claims, own []crdt.ReplicaID, owed []int64) []int64 {
	for _, r := range own {
		if c.Compensate(r) {
			owed = append(owed, c.IngestMs(r))
		}
	}
	return owed
}

// owesAny reports whether any of own's claims in c lost and is not
// compensated yet.
func owesAny(c crdt.Claims, own []crdt.ReplicaID) bool {
	for _, r := range own {
		if c.Owes(r) {
			return true
		}
	}
	return false
}

// merge folds the claim set c received from a peer into k's and applies the
// claim rule for own (this node's current replica ID, then its retired
// ones): each of their claims that now loses moves to StageCompensated and
// the caller must add 1 to the current ID's N slot of the counter per claim
// while still holding the admission gate. Callers hold the gate.
func (t *claimTable) merge(k store.ClaimKey, c crdt.Claims, own []crdt.ReplicaID) mergeResult {
	id, s := t.id(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, slot, ok := s.getLocked(id)
	if ok {
		cur = cur.Clone() // readers may hold the old value's slots
	}
	var r mergeResult
	r.changed = cur.Merge(c)
	if r.owed = compensateOwn(&cur, own, nil); len(r.owed) > 0 {
		r.changed = true
	}
	if !r.changed {
		return r
	}
	s.putLocked(id, cur, slot.batch) // a won claim stays unsynced until its batch is final
	r.adopted = cur.Equal(c)
	t.enqueue(k)
	return r
}

// load puts a claim set read from disk at start into the table.
// A key read more than once (from a claim block, and on its own) merges.
func (t *claimTable) load(k store.ClaimKey, c crdt.Claims) {
	id, s := t.id(k)
	s.mu.Lock()
	if cur, _, ok := s.getLocked(id); ok {
		cur = cur.Clone()
		cur.Merge(c)
		c = cur
	}
	s.putLocked(id, c, 0)
	s.mu.Unlock()
}

// get returns k's claim set, if it has one.
func (t *claimTable) get(k store.ClaimKey) (crdt.Claims, bool) {
	id, s := t.id(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	c, _, ok := s.getLocked(id)
	return c, ok
}

func (t *claimTable) enqueue(k store.ClaimKey) { t.queue.push(k) }

// prepare is the claims' part of the committer's Prepare hook (which runs
// with the admission gate held exclusively): it appends the claims won here
// and the current state of every other queued claim set that has not expired
// at nowMs, and returns the written keys (for replication, once durable). A
// set holding only self's fresh claim, as every view counted here leaves it,
// is not written when its counted event is its record (inEvents), and
// otherwise goes into a claim block of its window (store.ClaimBlock, keys
// unique by seq), with no lookup for a claim won here; any other set is
// written on its own.
func (t *claimTable) prepare(dst []store.Mutation, nowMs int64, self crdt.ReplicaID, seq func() uint64) ([]store.Mutation, []store.ClaimKey, error) {
	fresh := t.fresh.take()
	queue := t.queue.takeDistinct()
	var firstErr error
	written := make([]store.ClaimKey, 0, len(fresh)+len(queue))
	var blocks map[uint64]*store.ClaimBlock
	block := func(k store.ClaimKey, ingestMs int64) {
		if blocks == nil {
			blocks = make(map[uint64]*store.ClaimBlock, 1)
		}
		b := blocks[k.Window]
		if b == nil {
			b = new(store.ClaimBlock)
			blocks[k.Window] = b
		}
		b.Add(k, ingestMs)
		written = append(written, k)
	}
	for _, f := range fresh {
		switch {
		case t.expiryMs(f.key.Window) <= nowMs:
		case t.inEvents:
			written = append(written, f.key) // its counted event is its record
		default:
			block(f.key, f.ingestMs)
		}
	}
	t.fresh.recycle(fresh)
	for _, k := range queue {
		c, ok := t.get(k)
		ttlMs := t.expiryMs(k.Window) - nowMs
		if !ok || ttlMs <= 0 {
			continue // expired: nothing needs it any more
		}
		if c.Len() == 1 && c.Stage(self) == crdt.StageClaimed {
			block(k, c.IngestMs(self))
			continue
		}
		m, err := store.ClaimMutation(k, c, msDuration(ttlMs))
		if err != nil {
			firstErr = err
			t.enqueue(k)
			continue
		}
		dst = append(dst, m)
		written = append(written, k)
	}
	for _, w := range slices.Sorted(maps.Keys(blocks)) {
		dst = append(dst, blocks[w].Mutations(w, self, seq, msDuration(t.expiryMs(w)-nowMs))...)
	}
	return dst, written, firstErr
}

// requeue queues keys whose batch failed to be written again.
func (t *claimTable) requeue(keys []store.ClaimKey) { t.queue.push(keys...) }

// expire drops the windows whose expiry is at or before nowMs and reports
// how many claim sets went.
func (t *claimTable) expire(nowMs int64) int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for w, set := range s.windows {
			if t.expiryMs(w) <= nowMs {
				n += set.n
				delete(s.windows, w)
			}
		}
		for id := range s.multi {
			if t.expiryMs(id.window) <= nowMs {
				delete(s.multi, id)
			}
		}
		s.mu.Unlock()
	}
	return n
}

// len is the number of claim sets in memory.
func (t *claimTable) len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for _, set := range s.windows {
			n += set.n
		}
		s.mu.Unlock()
	}
	return n
}

// claimsInEvents reports whether cfg's raw event log keeps every counted
// event at least as long as its claim lives (the dedup window and the lag
// budget, and a second more: Badger's expiry times are whole seconds), so
// that the event can be the claim's only record (claimTable.inEvents).
func claimsInEvents(cfg Config) bool {
	return cfg.EventRetention >= cfg.DedupWindow+cfg.LagBudget+time.Second
}

// forEachStoredClaim calls fn with every claim set the store holds
// (store.ForEachClaim, whose largest claim-block sequence it returns) and
// then with the claim of every counted event in the raw event log, a view
// or an event type other than likes, whose window has not expired at
// nowMs, as a set of that claim alone: the record of a claim won while
// claimTable.inEvents was set. A claim of an older run in a claim block,
// and its event too, comes twice; fn merges. The log is read on every
// core (store.ForEachEventParallel): fn must be safe for concurrent use.
//
// Every view counted here was counted because it won its claim, with the
// ingest time and replica its event logs, in the window its ingest time is
// in; the event is written in the batch that holds its claim and count.
func (n *Node) forEachStoredClaim(nowMs int64, fn func(store.ClaimKey, crdt.Claims) error) (maxBlockSeq uint64, err error) {
	if maxBlockSeq, err = n.store.ForEachClaim(fn); err != nil {
		return 0, err
	}
	// The first window whose claims have not expired: expiryMs(first) >
	// nowMs ≥ expiryMs(first-1).
	first := max(0, nowMs-n.claims.lagMs) / n.windowMs
	err = n.store.ForEachEventParallel(first*n.windowMs, runtime.GOMAXPROCS(0), func(ev store.Event) error {
		if ev.Fate != store.FateCounted || ev.Event == EventLike || ev.Event == "unlike" || ev.Replica == 0 {
			return nil // not a claim won here (no replica is 0: a claim block of one is corrupt)
		}
		k := store.ClaimKey{Video: ev.Video, Event: claimEvent(ev.Event), User: ev.User, Window: uint64(ev.IngestMs / n.windowMs)}
		return fn(k, crdt.NewClaims(ev.Replica, ev.IngestMs))
	})
	if err != nil {
		return 0, fmt.Errorf("read the claims of counted events: %w", err)
	}
	return maxBlockSeq, nil
}
