package region

import (
	"cmp"
	"hash/maphash"
	"maps"
	"slices"
	"sync"

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
type claimTable struct {
	seed     maphash.Seed
	windowMs int64
	lagMs    int64
	shards   [claimShards]claimShard

	queue keyQueue[store.ClaimKey] // claim sets changed since the last batch was cut
}

type claimShard struct {
	mu      sync.Mutex // protects windows
	windows map[uint64]map[claimID]claimSlot
}

// claimSlot is a claim set in memory. synced, for a claim this node won, is
// closed when the batch holding it is durable (or failed, which is final):
// until then a repeat must not answer "already counted" for a view that a
// crash could still lose. It is the batch's own channel (store.Ticket.Done),
// so winning a claim allocates no channel and settles with its batch; it is
// nil once seen closed, and for sets this node did not win or loaded from
// disk.
type claimSlot struct {
	claims crdt.Claims
	synced <-chan struct{}
}

// claimID names a claim set within a window: Event is empty for views.
type claimID struct{ video, event, user string }

func newClaimTable(windowMs, lagMs int64) *claimTable {
	t := &claimTable{seed: maphash.MakeSeed(), windowMs: windowMs, lagMs: lagMs}
	for i := range t.shards {
		t.shards[i].windows = make(map[uint64]map[claimID]claimSlot)
	}
	return t
}

// expiryMs is when the claims of window w may be forgotten: the end of the
// window plus the lag budget. Every replica derives it from the key alone.
func (t *claimTable) expiryMs(w uint64) int64 { return int64(w+1)*t.windowMs + t.lagMs }

func (t *claimTable) shard(k store.ClaimKey) *claimShard {
	var h maphash.Hash
	h.SetSeed(t.seed)
	h.WriteString(k.Video)
	h.WriteByte(0)
	h.WriteString(k.User)
	return &t.shards[h.Sum64()%claimShards]
}

// claimLocal claims k for replica self at ingestMs unless k already has a
// claim set (made here or received from a peer). A won claim is queued for
// the next batch, whose Done channel batchDone is (nil with async
// durability, where nothing waits for it). When k was claimed already,
// synced is closed once that claim is durable (nil if it is). Callers hold
// the admission gate, so batchDone is the batch the claim will be written in.
func (t *claimTable) claimLocal(k store.ClaimKey, self crdt.ReplicaID, ingestMs int64, batchDone <-chan struct{}) (won bool, synced <-chan struct{}) {
	s := t.shard(k)
	id := claimID{k.Video, k.Event, k.User}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.windows[k.Window]
	if cur, ok := m[id]; ok {
		if cur.synced == nil {
			return false, nil
		}
		select {
		case <-cur.synced:
			cur.synced = nil
			m[id] = cur
			return false, nil
		default:
			return false, cur.synced
		}
	}
	s.putLocked(k.Window, id, claimSlot{claims: crdt.NewClaims(self, ingestMs), synced: batchDone})
	t.enqueue(k)
	return true, nil
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
	s := t.shard(k)
	id := claimID{k.Video, k.Event, k.User}
	s.mu.Lock()
	defer s.mu.Unlock()
	slot, ok := s.windows[k.Window][id]
	cur := slot.claims
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
	slot.claims = cur // a won claim stays unsynced until its batch is durable
	s.putLocked(k.Window, id, slot)
	r.adopted = cur.Equal(c)
	t.enqueue(k)
	return r
}

// load puts a claim set read from disk at start into the table.
// A key read more than once (from a claim block, and on its own) merges.
func (t *claimTable) load(k store.ClaimKey, c crdt.Claims) {
	s := t.shard(k)
	id := claimID{k.Video, k.Event, k.User}
	s.mu.Lock()
	if cur, ok := s.windows[k.Window][id]; ok {
		cur.claims.Merge(c) // a set loaded here has no readers yet
		c = cur.claims
	}
	s.putLocked(k.Window, id, claimSlot{claims: c})
	s.mu.Unlock()
}

// putLocked stores c as the claim set of id in window w. Callers hold s.mu.
func (s *claimShard) putLocked(w uint64, id claimID, c claimSlot) {
	m := s.windows[w]
	if m == nil {
		m = make(map[claimID]claimSlot)
		s.windows[w] = m
	}
	m[id] = c
}

// keys returns the key of every claim set in memory, sorted (a deterministic
// order for the replication engine).
func (t *claimTable) keys() []store.ClaimKey {
	var out []store.ClaimKey
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for w, m := range s.windows {
			for id := range m {
				out = append(out, store.ClaimKey{Video: id.video, Event: id.event, User: id.user, Window: w})
			}
		}
		s.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b store.ClaimKey) int {
		return cmp.Or(cmp.Compare(a.Video, b.Video), cmp.Compare(a.Event, b.Event), cmp.Compare(a.User, b.User), cmp.Compare(a.Window, b.Window))
	})
	return out
}

// get returns k's claim set, if it has one.
func (t *claimTable) get(k store.ClaimKey) (crdt.Claims, bool) {
	s := t.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.windows[k.Window][claimID{k.Video, k.Event, k.User}]
	return c.claims, ok
}

func (t *claimTable) enqueue(k store.ClaimKey) { t.queue.push(k) }

// prepare is the claims' part of the committer's Prepare hook (which runs
// with the admission gate held exclusively): it appends the current state of
// every queued claim set that has not expired at nowMs, and returns the
// written keys (for replication, once durable). A set holding only self's
// fresh claim, as every view counted here leaves it, goes into a claim block
// of its window (store.ClaimBlock, keys unique by seq); any other set is
// written on its own.
func (t *claimTable) prepare(dst []store.Mutation, nowMs int64, self crdt.ReplicaID, seq func() uint64) ([]store.Mutation, []store.ClaimKey, error) {
	queue := t.queue.takeDistinct()
	var firstErr error
	written := queue[:0]
	var blocks map[uint64]*store.ClaimBlock
	for _, k := range queue {
		c, ok := t.get(k)
		ttlMs := t.expiryMs(k.Window) - nowMs
		if !ok || ttlMs <= 0 {
			continue // expired: nothing needs it any more
		}
		if c.Len() == 1 && c.Stage(self) == crdt.StageClaimed {
			if blocks == nil {
				blocks = make(map[uint64]*store.ClaimBlock, 1)
			}
			b := blocks[k.Window]
			if b == nil {
				b = new(store.ClaimBlock)
				blocks[k.Window] = b
			}
			b.Add(k, c.IngestMs(self))
			written = append(written, k)
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
		for w, m := range s.windows {
			if t.expiryMs(w) <= nowMs {
				n += len(m)
				delete(s.windows, w)
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
		for _, m := range s.windows {
			n += len(m)
		}
		s.mu.Unlock()
	}
	return n
}
