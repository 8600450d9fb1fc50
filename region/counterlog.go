package region

import (
	"math"
	"time"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/store"
)

// Checkpointing of the counter log (store.CounterLog): each group commit
// writes the states of the counters it changed as a few log records, not one
// Badger entry per key (unique-viewer chunks go to their own entries:
// uniqueTable.prepare); the log is then
// checkpointed in epochs. An epoch ends once it has written epochRecords
// records (and the previous one is done): its keys (each once, however often
// it was logged) are written to their own entries, each batch taking a share
// in proportion to the states it logs (at least minDrain), so that the epoch
// drains while as many states are logged as it logged: checkpointing keeps
// up with logging even when every state is of a different key, and the log
// stays within about three epochs; once the batch
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
	// minDrain is the fewest keys a batch checkpoints while an epoch drains.
	minDrain = 32
	// minDeletes is how many log records a batch may delete however small
	// it is; a batch of more mutations may delete as many as it has
	// (takeDeletes).
	minDeletes = 256
)

// loggedKey is a key whose state the counter log holds: a counter
// (loggedCounter), or a test's fake. checkpoint is the
// write of its current state to its own entry, ok false if it has expired.
// It runs in Prepare, with the admission gate held exclusively and after
// every changed key was logged, so the current state is the latest logged.
type loggedKey interface {
	checkpoint(nowMs int64) (m store.Mutation, ok bool, err error)
	// setLogged records whether the log holds a state of the key that its
	// own entry may lack (true from the batch that logs it until a
	// checkpoint that covers it is durable): such a key must stay in
	// memory, where its latest state is.
	setLogged(bool)
	// logEpoch is the stamp of the epoch that last logged the key
	// (counterLog.epoch), or 0 if that epoch is neither the current one
	// nor the one draining; setLogEpoch sets it.
	logEpoch() uint8
	setLogEpoch(uint8)
}

// counterLog is the checkpoint state of the counter log. Only the committer
// goroutine uses it: Prepare and its after hook run there, one batch at a
// time.
type counterLog struct {
	epochRecords int // epochRecords, or fewer in tests
	// maxMembers, if set, also ends an epoch once it has logged that many
	// keys: a logged counter cannot be evicted until its epoch is
	// checkpointed, so a small counter cache takes short epochs.
	maxMembers int
	seq        func() uint64    // names log records
	rec        store.CounterLog // the batch being prepared's records

	// epoch stamps the keys the current epoch logged (loggedKey.logEpoch):
	// 1 to 255, the next after 255 being 1. A key's stamp is the current
	// epoch's, the draining one's, or 0: draining a key clears a stamp
	// the current epoch did not renew, and an epoch ends only once the
	// one before it is drained. So a stamp equal to epoch means the key
	// was logged in this epoch, with no map to ask (a map of the epoch's
	// keys cost a lookup per state logged, for hundreds of thousands of
	// keys).
	epoch uint8
	// logged is the keys the current epoch logged, in the order first
	// logged: the order they are checkpointed in, which depends on nothing
	// but the order of batches (the simulator's runs repeat exactly).
	logged []loggedKey
	keys   [][]byte // the current epoch's log records
	states int      // states the current epoch logged
	batch  int      // states logged by the batch being prepared
	ratio  float64  // while draining: keys to checkpoint per state logged

	drain     []loggedKey // the ending epoch's keys not yet checkpointed
	drainKeys [][]byte    // the ending epoch's records, deleted once drain is durable
	deletes   [][]byte    // records to delete in the next batch
}

func newCounterLog(seq func() uint64) *counterLog {
	return &counterLog{epochRecords: epochRecords, seq: seq, epoch: 1}
}

// put logs k's state v, expiring at expiresMs (0: never), as lk's, in the
// batch being prepared; or, on a nil log or for a state too large for a
// record, appends the write of k's own entry (with ttl) to dst.
func (l *counterLog) put(dst []store.Mutation, k crdt.Key, v []byte, expiresMs int64, ttl time.Duration, lk loggedKey) []store.Mutation {
	if l != nil && l.rec.Add(k, v, expiresMs) {
		if lk.logEpoch() != l.epoch {
			lk.setLogEpoch(l.epoch)
			l.logged = append(l.logged, lk)
		}
		lk.setLogged(true)
		l.batch++
		return dst
	}
	m := store.CounterValueMutation(k, v)
	m.TTL = ttl
	return append(dst, m)
}

// prepare is the end of a batch's Prepare: it appends the batch's log
// records, ends the epoch if it is full and the previous one is done, and
// appends the checkpoint writes and log deletions due; done must see the
// batch's outcome. drained is the keys checkpointed (a key whose checkpoint
// failed is back in the drain, and err says why).
func (l *counterLog) prepare(dst []store.Mutation, nowMs int64) (out []store.Mutation, drained []loggedKey, deleted [][]byte, err error) {
	for _, m := range l.rec.Mutations(l.seq) {
		dst = append(dst, m)
		l.keys = append(l.keys, m.Key)
	}
	logged := l.batch
	l.batch = 0
	l.states += logged
	full := len(l.keys) >= l.epochRecords || l.maxMembers > 0 && len(l.logged) >= l.maxMembers
	if full && len(l.keys) > 0 && len(l.drain) == 0 && l.drainKeys == nil {
		l.drain, l.logged = l.logged, nil
		// Checkpoint in step with logging: the epoch drains while as many
		// states are logged as it logged (as fast as logging even if each
		// state was of a different key), each batch taking its share by
		// the states it logs, so small batches stay small and the epoch's
		// writes come in no burst.
		l.ratio = float64(len(l.drain)) / float64(max(l.states, 1))
		l.drainKeys, l.keys, l.states = l.keys, nil, 0
		l.epoch = l.epoch%255 + 1
	}
	var failed []loggedKey
	for n := max(minDrain, int(math.Ceil(l.ratio*float64(logged)))); n > 0 && len(l.drain) > 0; {
		k := l.drain[len(l.drain)-1]
		l.drain = l.drain[:len(l.drain)-1]
		if k.logEpoch() == l.epoch {
			// The current epoch logged k again, in this batch or a durable
			// one: its records hold a state at least as new as the ending
			// epoch's, and stay until that epoch is checkpointed in turn,
			// so k needs no write now. A key changed in every epoch (a busy
			// video's counters) is written to its entry only when it stops
			// changing, or by Open's or Close's replay.
			drained = append(drained, k)
			continue
		}
		k.setLogEpoch(0) // logged in the draining epoch alone
		n--
		m, ok, cerr := k.checkpoint(nowMs)
		switch {
		case cerr != nil:
			// Not checkpointed: the epoch's records must stay until it is.
			err = cerr
			failed = append(failed, k)
			continue
		case ok:
			dst = append(dst, m)
		}
		drained = append(drained, k)
	}
	l.drain = append(l.drain, failed...)
	deleted = l.takeDeletes(len(dst))
	return append(dst, store.CounterLogDeletes(deleted)...), drained, deleted, err
}

// loggedCounter is a counter of t in the counter log.
type loggedCounter struct {
	t *counterTable
	e *counterEntry
}

func (c loggedCounter) checkpoint(nowMs int64) (store.Mutation, bool, error) {
	return c.t.checkpoint(c.e, nowMs)
}

func (c loggedCounter) setLogged(v bool) { c.e.inLog = v }

func (c loggedCounter) logEpoch() uint8 { return c.e.logEpoch }

func (c loggedCounter) setLogEpoch(v uint8) { c.e.logEpoch = v }

// takeDeletes hands over the records a batch of size mutations deletes:
// as many as it has mutations, and at least minDeletes. An epoch's records
// were all deleted in one batch before, 16,384 deletions that made a group
// commit take 30-40 ms and held every request waiting on it (the paced
// runs of bench compare saw it in their p99); the records left until a
// later batch only cost Open a longer replay after a crash.
func (l *counterLog) takeDeletes(size int) [][]byte {
	if len(l.deletes) == 0 {
		return nil
	}
	n := min(len(l.deletes), max(minDeletes, size))
	d := l.deletes[:n:n] // capped: appends to either side leave the other be
	l.deletes = l.deletes[n:]
	if len(l.deletes) == 0 {
		l.deletes = nil
	}
	return d
}

// done is the after hook's part: a batch that checkpointed drained and
// deleted deleted is durable (err nil) or failed.
func (l *counterLog) done(err error, drained []loggedKey, deleted [][]byte) {
	if err != nil {
		l.drain = append(l.drain, drained...)
		l.deletes = append(l.deletes, deleted...)
		return
	}
	for _, k := range drained {
		// Its entry now holds every state the log does, unless the
		// current epoch logged it again.
		if k.logEpoch() != l.epoch {
			k.setLogged(false)
		}
	}
	if len(drained) > 0 && len(l.drain) == 0 && l.drainKeys != nil {
		// Every counter of the ending epoch is in its entry, durably: its
		// records hold nothing newer.
		l.deletes = append(l.deletes, l.drainKeys...)
		l.drainKeys = nil
	}
}
