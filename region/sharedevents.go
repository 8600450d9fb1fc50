package region

import (
	"sync"
	"time"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/store"
)

// sharedEventsMax is the most raw events an ingest call logs through the
// node's shared blocks (sharedEvents) instead of blocks of its own.
const sharedEventsMax = 4

// sharedEvents gathers the raw events of small ingest calls (single views,
// above all) into one block per ingest millisecond for the batch being
// filled, which its Prepare writes (prepareBatch). A block of its own was a
// Badger entry per view, a third of the entries of a group commit of single
// views (issue 9). Calls add their events while holding the admission
// gate and Prepare takes them holding it exclusively, so the events are in
// the batch that holds the counts they explain, as a call's own block was.
// Events share a block only with events of the same ingest time and
// replica, which the block's key holds; nothing reads a block as one call.
type sharedEvents struct {
	mu     sync.Mutex
	blocks []msEvents // by first use; few: one or two milliseconds per batch
}

// msEvents is the shared block of the events ingested in one millisecond.
type msEvents struct {
	ms     int64
	events store.EventBlock
}

// loggedView is one raw event waiting to join a shared block.
type loggedView struct {
	video, event, user string
	clientMs           int64
	fate               store.Fate
}

// add appends evs, ingested at ms, to the block of ms.
func (s *sharedEvents) add(ms int64, evs []loggedView) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := len(s.blocks) - 1
	for i >= 0 && s.blocks[i].ms != ms {
		i--
	}
	if i < 0 {
		s.blocks = append(s.blocks, msEvents{ms: ms})
		i = len(s.blocks) - 1
	}
	for _, ev := range evs {
		s.blocks[i].events.Add(ev.video, ev.event, ev.user, ev.clientMs, ev.fate)
	}
}

// mutations appends the writes of every shared block to dst, as
// store.EventBlock.Mutations makes them, in the order the blocks were first
// used (the simulator's runs repeat exactly), and empties the blocks.
// Callers hold the admission gate exclusively.
func (s *sharedEvents) mutations(dst []store.Mutation, replica crdt.ReplicaID, seq func() uint64, ttl time.Duration) []store.Mutation {
	s.mu.Lock()
	blocks := s.blocks
	s.blocks = nil
	s.mu.Unlock()
	for i := range blocks {
		dst = append(dst, blocks[i].events.Mutations(blocks[i].ms, replica, seq, ttl)...)
	}
	return dst
}
