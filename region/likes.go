package region

import (
	"cmp"
	"hash/maphash"
	"math"
	"slices"
	"sync"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/store"
)

// Likes (DESIGN, "Exactly once across regions": likes use the same mechanism
// on (video, user) like/unlike transitions).
//
// A user's likes of a video are a sequence of numbered transitions: 1 is the
// first like, 2 the unlike after it, 3 a like again, and so on, so an odd
// number is a like and an even one an unlike. The user likes the video iff
// the highest transition known is odd. A like takes the next number after the
// highest this node knows (if that one is even), an unlike the next one (if
// it is odd); anything else changes nothing and counts nothing, so one user
// counts at most once and an unlike only undoes an existing like.
//
// Each transition is a claim set (crdt.Claims) under ClaimKey{video, "like",
// user, k}, replicated like the view claims, and the replica that makes it
// adds 1 to its P slot of the (video, "like") counter for a like, 1 to its N
// slot for an unlike, in the same batch. Two regions that make the same
// transition concurrently (the user liked in both before either heard of the
// other) both claim k; the smallest (ingest ms, replica) wins and every loser
// takes its own step back, once and durably: a losing like adds 1 to N, a
// losing unlike adds 1 to P. Each transition is therefore counted exactly
// once everywhere, so the converged count is the number of users whose
// highest transition is odd: never below zero, and the same answer in every
// region. Transitions never expire (a like is forever).

// The count a node reports is the number of users whose highest transition
// it knows is odd, kept per video as transitions are made, merged and loaded:
// it is never negative and always agrees with the per-user answers of the
// same node. The (video, "like") PN-Counter and its time buckets converge to
// the same number (they feed the series and trending), but a replica can hold
// a transition's claim before the counter change that came with it, so
// their raw value may lag or dip for a moment; the count does not.

// likeTable holds every like transition in memory; the node loads them at
// start. All changes happen under the committer's admission gate, and the
// changed keys are written by the committer's Prepare hook, with the counter
// changes they explain.
type likeTable struct {
	seed   maphash.Seed
	shards [claimShards]likeShard

	queue keyQueue[store.ClaimKey] // transitions changed since the last batch was cut

	counts [counterShards]likeCounts // users liking each video, by video
}

type likeCounts struct {
	mu sync.Mutex
	m  map[string]int64
}

// likeUser names one user's likes of one video.
type likeUser struct{ video, user string }

type likeShard struct {
	mu    sync.Mutex
	users map[likeUser][]crdt.Claims // transitions 1..len; a gap is a zero Claims
	// unsynced holds this node's transitions whose batch is not durable yet:
	// a repeat must not answer "unchanged" on the strength of a transition a
	// crash could still lose.
	unsynced map[store.ClaimKey]chan struct{}
}

func newLikeTable() *likeTable {
	t := &likeTable{seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].users = make(map[likeUser][]crdt.Claims)
		t.shards[i].unsynced = make(map[store.ClaimKey]chan struct{})
	}
	for i := range t.counts {
		t.counts[i].m = make(map[string]int64)
	}
	return t
}

func (t *likeTable) countShard(video string) *likeCounts {
	return &t.counts[maphash.String(t.seed, video)%counterShards]
}

// adjust adds d to the users liking video.
func (t *likeTable) adjust(video string, d int64) {
	c := t.countShard(video)
	c.mu.Lock()
	if v := c.m[video] + d; v == 0 {
		delete(c.m, video)
	} else {
		c.m[video] = v
	}
	c.mu.Unlock()
}

// adjustFlip adjusts video's count when a user's highest transition moved
// from before to after.
func (t *likeTable) adjustFlip(video string, before, after uint64) {
	if was, is := before%2 == 1, after%2 == 1; was != is {
		if is {
			t.adjust(video, 1)
		} else {
			t.adjust(video, -1)
		}
	}
}

// count is the number of users who like video, as this node knows it.
func (t *likeTable) count(video string) uint64 {
	c := t.countShard(video)
	c.mu.Lock()
	defer c.mu.Unlock()
	return uint64(max(c.m[video], 0))
}

func (t *likeTable) shard(video, user string) *likeShard {
	var h maphash.Hash
	h.SetSeed(t.seed)
	h.WriteString(video)
	h.WriteByte(0)
	h.WriteString(user)
	return &t.shards[h.Sum64()%claimShards]
}

// likeKey is the claim key of transition k of user on video.
func likeKey(video, user string, k uint64) store.ClaimKey {
	return store.ClaimKey{Video: video, Event: EventLike, User: user, Window: k}
}

// MaxLikeTransitions bounds the transitions of one user on one video that a
// node accepts from a peer (a like and an unlike a second for years is far
// below it); it bounds memory against a hostile or broken peer.
const MaxLikeTransitions = 1 << 20

// top is the highest transition in ts (0 if none).
func top(ts []crdt.Claims) uint64 {
	for i := len(ts) - 1; i >= 0; i-- {
		if !ts[i].IsZero() {
			return uint64(i + 1)
		}
	}
	return 0
}

// liked reports whether user likes video as this node knows it.
func (t *likeTable) liked(video, user string) bool {
	s := t.shard(video, user)
	s.mu.Lock()
	defer s.mu.Unlock()
	return top(s.users[likeUser{video: video, user: user}])%2 == 1
}

// transition makes user's next transition towards like (or unlike) on
// video, claimed by self at ingestMs, unless the user is already there. It
// returns the transition's key and true if it made one; otherwise, if the
// transition that put the user there is not durable yet, synced is closed
// once it is. Callers hold the admission gate.
func (t *likeTable) transition(video, user string, like bool, self crdt.ReplicaID, ingestMs int64) (k store.ClaimKey, made bool, synced <-chan struct{}) {
	s := t.shard(video, user)
	id := likeUser{video: video, user: user}
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := s.users[id]
	cur := top(ts)
	if (cur%2 == 1) == like {
		if ch, ok := s.unsynced[likeKey(video, user, cur)]; ok {
			return store.ClaimKey{}, false, ch
		}
		return store.ClaimKey{}, false, nil
	}
	k = likeKey(video, user, cur+1)
	s.users[id] = append(ts[:cur:cur], crdt.NewClaims(self, ingestMs))
	t.adjustFlip(video, cur, cur+1)
	s.unsynced[k] = make(chan struct{})
	t.enqueue(k)
	return k, true, nil
}

// merge folds the claim set c of transition k received from a peer into the
// table and applies the claim rule for own, like claimTable.merge. Callers
// hold the admission gate.
func (t *likeTable) merge(k store.ClaimKey, c crdt.Claims, own []crdt.ReplicaID) (r mergeResult) {
	s := t.shard(k.Video, k.User)
	id := likeUser{video: k.Video, user: k.User}
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := s.users[id]
	i := int(k.Window) - 1
	var cur crdt.Claims
	if i < len(ts) {
		cur = ts[i].Clone() // readers may hold the old value's slots
	}
	r.changed = cur.Merge(c)
	if r.owed = compensateOwn(&cur, own, nil); len(r.owed) > 0 {
		r.changed = true
	}
	if !r.changed {
		return r
	}
	before := top(ts)
	for len(ts) <= i {
		ts = append(ts, crdt.Claims{})
	}
	ts[i] = cur
	r.adopted = cur.Equal(c)
	t.enqueue(k)
	if j, ingestMs, ok := latestLostIntent(ts, own); ok {
		if next := top(ts) + 1; (j%2 == 1) == (next%2 == 1) && next <= MaxLikeTransitions {
			// This node's intent is the latest and the user's state is not
			// it: make it again as the next transition, at its own time.
			for uint64(len(ts)) < next-1 {
				ts = append(ts, crdt.Claims{})
			}
			ts = append(ts, crdt.NewClaims(own[0], ingestMs))
			ka := likeKey(k.Video, k.User, next)
			s.unsynced[ka] = make(chan struct{})
			t.enqueue(ka)
			r.reapplied, r.reappliedMs = ka, ingestMs
		}
	}
	s.users[id] = ts
	t.adjustFlip(k.Video, before, top(ts))
	return r
}

// latestLostIntent finds this node's latest like or unlike that lost its
// transition number to a concurrent one made elsewhere (a claim of own that
// is not its transition's winner) and is later, by ingest time, than the
// winner of its transition and of every transition after it: the last thing
// the user asked for, which the numbering put under an older intent. It
// returns that claim's transition (its parity is the intent: odd = like) and
// ingest time. Ties in time are not later, so a claim never outranks one
// made again for it at the same time.
//
// A region that did not know a user's earlier transitions (a partition)
// numbers a new like from its stale history; after the heal it meets and
// loses to an older like with the same number, and an unlike made after
// that older like would undo the newer, acknowledged one. Making the lost
// intent again as the next transition lets the latest intent win instead:
// every node ends with the user's state of the latest intent, and the loser
// that acts is the one node holding it.
func latestLostIntent(ts []crdt.Claims, own []crdt.ReplicaID) (transition uint64, ingestMs int64, ok bool) {
	later := int64(math.MinInt64) // the latest winner of transitions j+1.. and j
	for j := len(ts) - 1; j >= 0; j-- {
		c := ts[j]
		w, wMs, any := c.Winner()
		if !any {
			continue
		}
		later = max(later, wMs)
		for _, r := range own {
			if r == w || c.Stage(r) == 0 {
				continue
			}
			if ms := c.IngestMs(r); ms > later && (!ok || ms > ingestMs) {
				transition, ingestMs, ok = uint64(j+1), ms, true
			}
		}
	}
	return transition, ingestMs, ok
}

// load puts a transition read from disk at start into the table.
func (t *likeTable) load(k store.ClaimKey, c crdt.Claims) {
	if k.Window == 0 || k.Window > MaxLikeTransitions {
		return
	}
	s := t.shard(k.Video, k.User)
	id := likeUser{video: k.Video, user: k.User}
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := s.users[id]
	before := top(ts)
	for uint64(len(ts)) < k.Window {
		ts = append(ts, crdt.Claims{})
	}
	ts[k.Window-1] = c
	s.users[id] = ts
	t.adjustFlip(k.Video, before, top(ts))
}

// get returns transition k's claim set, if it has one.
func (t *likeTable) get(k store.ClaimKey) (crdt.Claims, bool) {
	s := t.shard(k.Video, k.User)
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := s.users[likeUser{video: k.Video, user: k.User}]
	if k.Window == 0 || k.Window > uint64(len(ts)) || ts[k.Window-1].IsZero() {
		return crdt.Claims{}, false
	}
	return ts[k.Window-1], true
}

// keys returns the key of every transition in memory, sorted.
func (t *likeTable) keys() []store.ClaimKey {
	var out []store.ClaimKey
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for id, ts := range s.users {
			for j, c := range ts {
				if !c.IsZero() {
					out = append(out, likeKey(id.video, id.user, uint64(j+1)))
				}
			}
		}
		s.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b store.ClaimKey) int {
		return cmp.Or(cmp.Compare(a.Video, b.Video), cmp.Compare(a.User, b.User), cmp.Compare(a.Window, b.Window))
	})
	return out
}

// len is the number of transitions in memory.
func (t *likeTable) len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for _, ts := range s.users {
			for _, c := range ts {
				if !c.IsZero() {
					n++
				}
			}
		}
		s.mu.Unlock()
	}
	return n
}

func (t *likeTable) enqueue(k store.ClaimKey) { t.queue.push(k) }

// prepare is the likes' part of the committer's Prepare hook: it appends the
// current state of every queued transition (kept forever), once however
// often it changed, and returns the written keys.
func (t *likeTable) prepare(dst []store.Mutation) ([]store.Mutation, []store.ClaimKey, error) {
	queue := t.queue.takeDistinct()
	var firstErr error
	written := queue[:0]
	for _, k := range queue {
		c, ok := t.get(k)
		if !ok {
			continue
		}
		m, err := store.ClaimMutation(k, c, 0)
		if err != nil {
			firstErr = err
			t.enqueue(k)
			continue
		}
		dst = append(dst, m)
		written = append(written, k)
	}
	return dst, written, firstErr
}

// requeue queues keys whose batch failed to be written again.
func (t *likeTable) requeue(keys []store.ClaimKey) { t.queue.push(keys...) }

// settle marks a transition of this node as durable and releases the
// repeats waiting on it.
func (t *likeTable) settle(k store.ClaimKey) {
	s := t.shard(k.Video, k.User)
	s.mu.Lock()
	if ch, ok := s.unsynced[k]; ok {
		close(ch)
		delete(s.unsynced, k)
	}
	s.mu.Unlock()
}
