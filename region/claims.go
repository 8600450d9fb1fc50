package region

import (
	"hash/maphash"
	"sync"

	"github.com/tallyhq/tally/store"
)

const claimShards = 256

// claimTable holds the dedup claims of the live windows in memory. Memory is
// authoritative for a window when every claim ever made in it went through
// this table: the window is after startWindow (the later of the window the
// node started in and the highest window any earlier incarnation claimed in,
// which a clock stepped back can put ahead of the first) and has not been
// dropped from memory. Other windows are looked up in Badger.
type claimTable struct {
	seed        maphash.Seed
	startWindow uint64
	shards      [claimShards]claimShard
}

type claimShard struct {
	mu        sync.Mutex // protects everything below
	maxWindow uint64     // the newest window put; windows before maxWindow-1 are dropped
	windows   map[uint64]map[claimID]store.Claim
	// loading holds claims being looked up in Badger, so that two concurrent
	// requests for the same claim cannot both decide to count it.
	loading map[store.ClaimKey]chan struct{}
	// unsynced holds new claims whose batch is not yet durable: a repeat must
	// not answer "already counted" for a view that a crash could still lose.
	unsynced map[store.ClaimKey]chan struct{}
}

type claimID struct{ video, user string }

func newClaimTable(startWindow uint64) *claimTable {
	t := &claimTable{seed: maphash.MakeSeed(), startWindow: startWindow}
	for i := range t.shards {
		t.shards[i].windows = make(map[uint64]map[claimID]store.Claim)
		t.shards[i].loading = make(map[store.ClaimKey]chan struct{})
		t.shards[i].unsynced = make(map[store.ClaimKey]chan struct{})
	}
	return t
}

func (t *claimTable) shard(k store.ClaimKey) *claimShard {
	var h maphash.Hash
	h.SetSeed(t.seed)
	h.WriteString(k.Video)
	h.WriteByte(0)
	h.WriteString(k.User)
	return &t.shards[h.Sum64()%claimShards]
}

// claimResult is the outcome of claimTable.claim.
type claimResult struct {
	won bool        // the claim is new: count the view, then call settle
	old store.Claim // the existing claim when !won
	// synced, when !won, is closed once the existing claim is durable (nil if
	// it already is).
	synced <-chan struct{}
}

// claim records c under k unless k is already claimed. lookup reads Badger
// for windows where memory is not authoritative; its error aborts the claim.
// A won claim stays "unsynced" until settle(k) is called.
func (t *claimTable) claim(k store.ClaimKey, c store.Claim, lookup func(store.ClaimKey) (store.Claim, bool, error)) (claimResult, error) {
	s := t.shard(k)
	id := claimID{k.Video, k.User}
	for {
		s.mu.Lock()
		if old, ok := s.windows[k.Window][id]; ok {
			r := claimResult{old: old}
			if ch, ok := s.unsynced[k]; ok {
				r.synced = ch
			}
			s.mu.Unlock()
			return r, nil
		}
		if k.Window > t.startWindow && k.Window+1 >= s.maxWindow {
			s.winLocked(k, id, c)
			s.mu.Unlock()
			return claimResult{won: true}, nil
		}
		if wait, busy := s.loading[k]; busy {
			s.mu.Unlock()
			<-wait // another request is reading Badger for this claim; then look again
			continue
		}
		wait := make(chan struct{})
		s.loading[k] = wait
		s.mu.Unlock()

		old, found, err := lookup(k)

		s.mu.Lock()
		delete(s.loading, k)
		close(wait)
		switch {
		case err != nil:
			s.mu.Unlock()
			return claimResult{}, err
		case found:
			s.putLocked(k.Window, id, old)
			s.mu.Unlock()
			return claimResult{old: old}, nil
		}
		s.winLocked(k, id, c)
		s.mu.Unlock()
		return claimResult{won: true}, nil
	}
}

func (s *claimShard) winLocked(k store.ClaimKey, id claimID, c store.Claim) {
	s.putLocked(k.Window, id, c)
	s.unsynced[k] = make(chan struct{})
}

// settle marks a won claim as durable (or as final after a failed write) and
// releases the repeats waiting on it.
func (t *claimTable) settle(k store.ClaimKey) {
	s := t.shard(k)
	s.mu.Lock()
	if ch, ok := s.unsynced[k]; ok {
		close(ch)
		delete(s.unsynced, k)
	}
	s.mu.Unlock()
}

// putLocked stores a claim and drops windows older than the one before it:
// only the current window decides dedup, the previous one is kept for views
// ingested just before the boundary. Callers hold s.mu.
func (s *claimShard) putLocked(window uint64, id claimID, c store.Claim) {
	// A window older than maxWindow-1 (the clock went back) is kept too,
	// until the next new window: memory is checked before Badger, and a claim
	// not yet durable must still be found.
	m := s.windows[window]
	if m == nil {
		m = make(map[claimID]store.Claim)
		s.windows[window] = m
		s.maxWindow = max(s.maxWindow, window)
		for w := range s.windows {
			if w+1 < s.maxWindow {
				delete(s.windows, w)
			}
		}
	}
	m[id] = c
}

// len is the number of claims in memory.
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
