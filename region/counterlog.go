package region

import "github.com/tallyhq/tally/store"

// Checkpointing of the counter log (store.CounterLog): each group commit
// writes the states of the counters it changed as a few log records, not one
// Badger entry per counter; the log is then checkpointed in epochs. An epoch
// ends once it has written epochRecords records (and the previous one is
// done): its counters (each once, however often it was logged) are written
// to their own entries, at least minDrain per batch and as many as the batch
// logged, so checkpointing keeps up with logging even when every state is of
// a different counter (the epoch drains in no more batches than it took to
// fill, and the log stays within about three epochs); once the batch
// holding the last of them is durable, the epoch's records are deleted in
// the next batch. A counter logged a thousand times in an epoch is written
// to its entry once: the longer the epoch, the more writes the log saves.
//
// A crash at any point leaves each counter's latest durable state in its
// entry or in a record not yet deleted, and Open merges what is left of the
// log into the entries (store.ReplayCounterLog) before reading any.

const (
	// epochRecords is how many log records an epoch writes before its
	// counters are checkpointed: about 16 MB of log. The log holds at most
	// about three epochs (the draining one, and the current one growing
	// while it drains), which Open replays after a crash in a second or two.
	epochRecords = 16384
	// minDrain is the fewest counters a batch checkpoints while an epoch
	// drains.
	minDrain = 256
)

// counterLog is the checkpoint state of the counter log. Only the committer
// goroutine uses it: Prepare and its after hook run there, one batch at a
// time.
type counterLog struct {
	epochRecords int // epochRecords, or fewer in tests

	members map[*counterEntry]struct{} // counters logged in the current epoch
	keys    [][]byte                   // the current epoch's log records

	drain     []*counterEntry // the ending epoch's counters not yet checkpointed
	drainKeys [][]byte        // the ending epoch's records, deleted once drain is durable
	deletes   [][]byte        // records to delete in the next batch
}

func newCounterLog() *counterLog {
	return &counterLog{epochRecords: epochRecords, members: make(map[*counterEntry]struct{})}
}

// logged records that e's state went into the current epoch's log.
func (l *counterLog) logged(e *counterEntry) { l.members[e] = struct{}{} }

// wrote records the log records a batch wrote, and ends the epoch if it is
// full and the previous one is done.
func (l *counterLog) wrote(recs []store.Mutation) {
	for _, m := range recs {
		l.keys = append(l.keys, m.Key)
	}
	if len(l.keys) < l.epochRecords || len(l.drain) > 0 || l.drainKeys != nil {
		return
	}
	l.drain = make([]*counterEntry, 0, len(l.members))
	for e := range l.members {
		l.drain = append(l.drain, e)
	}
	l.drainKeys, l.keys = l.keys, nil
	l.members = make(map[*counterEntry]struct{})
}

// takeDrain hands over the counters this batch checkpoints, having logged
// logged states: at least minDrain and logged, or what is left.
func (l *counterLog) takeDrain(logged int) []*counterEntry {
	n := min(len(l.drain), max(minDrain, logged))
	out := l.drain[len(l.drain)-n:]
	l.drain = l.drain[:len(l.drain)-n]
	return out
}

// takeDeletes hands over the records this batch deletes.
func (l *counterLog) takeDeletes() [][]byte {
	d := l.deletes
	l.deletes = nil
	return d
}

// done is the after hook's part: a batch that checkpointed drained and
// deleted deleted is durable (err nil) or failed.
func (l *counterLog) done(err error, drained []*counterEntry, deleted [][]byte) {
	if err != nil {
		l.drain = append(l.drain, drained...)
		l.deletes = append(l.deletes, deleted...)
		return
	}
	if len(drained) > 0 && len(l.drain) == 0 && l.drainKeys != nil {
		// Every counter of the ending epoch is in its entry, durably: its
		// records hold nothing newer.
		l.deletes = append(l.deletes, l.drainKeys...)
		l.drainKeys = nil
	}
}
