package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/tallyhq/tally/crdt"
)

// The counter log holds counter states written by group commits in as few
// Badger entries as MaxBlockBytes allows, instead of one 'c' entry per
// counter and batch: a batch of 1,000 views over 1,000 videos changes 4,000
// counters (a total and three time buckets each), and Badger's per-entry
// cost was the largest part of the write path (issue 9). A counter state is
// a CRDT, so a newer log state merges over the 'c' entry and an older one
// changes nothing: the writer checkpoints the logged counters into their 'c'
// entries a few at a time, deletes the log records that every checkpointed
// state covers, and Open merges whatever log is left into the 'c' entries
// (ReplayCounterLog) before anything reads them.
//
// Key: 'l' seq (u64 BE). Value: counterLogTag, a u32 BE count, then per
// state (format 7): its video, its event with its expiry, and its state,
// each either written out or, to name what an earlier state of the same
// record had, a short reference:
//   - video: a uvarint length and the bytes, or 0: the previous state's;
//   - event: a uvarint reference: 0, then the event (uvarint-length-
//     prefixed) and the expiry time in unix ms (uvarint; 0: never), which
//     become name i (counting from 1) of the record if fewer than
//     maxLogNames came before; or i, name i;
//   - state: the canonical encoding (crdt.PNCounter.MarshalBinary),
//     uvarint-length-prefixed, or 0: the previous state's.
//
// A batch logs a video's total and its three time buckets one after the
// other, and every video viewed in the same minute has buckets of the same
// names and expiries: written out each time (format 6, counterLogTagV6:
// video, event, expiry, state), those were most of the log's bytes, and the
// log was most of what a batch of single views wrote (with the raw events):
// 157 bytes a view, which filled a 64 MiB memtable every 25 s at 17,000
// views/s, and each flush held commits up for a few hundred milliseconds.
// Records of format 6 are still read (ReplayCounterLog at the first start
// of format 7).

const (
	prefixCounterLog = 'l'
	// counterLogTag starts a counter log value (format 7).
	counterLogTag = 0xc2
	// counterLogTagV6 starts a counter log value of format 6.
	counterLogTagV6 = 0xc1
	// minLogStateBytes is the smallest encoded state: three references.
	minLogStateBytes = 3
	// minLogStateBytesV6 is the smallest state of format 6: two 1-byte IDs
	// with their lengths, a 1-byte expiry, a 1-byte state with its length.
	minLogStateBytesV6 = 7
	// maxLogNames bounds the names (event and expiry) a record refers to.
	maxLogNames = 64
	// maxLogState is the largest state encoding a log record takes; a larger
	// one (a counter of very many replicas) is written to its 'c' entry.
	maxLogState = MaxBlockBytes - blockHeader - 2*(1+2+maxIDLen) - 2*binary.MaxVarintLen64 - 2
)

// logName is an event of the counter log with its expiry.
type logName struct {
	event     string
	expiresMs int64
}

// CounterLog gathers the counter states of one group commit into log
// records. The zero value is empty and ready to use; it is not safe for
// concurrent use.
type CounterLog struct {
	b blockBuilder
	// What the open record's states can refer to.
	video string
	state []byte
	names []logName
}

// Len is the number of states added.
func (l *CounterLog) Len() int { return l.b.all }

// Add appends k's state, encoded by crdt.PNCounter.MarshalBinary, with its
// expiry time in unix ms (0: never). It reports false, adding nothing, for a
// state too large for a log record: write that one to its 'c' entry.
func (l *CounterLog) Add(k crdt.Key, state []byte, expiresMs int64) bool {
	if len(state) > maxLogState || len(state) == 0 || expiresMs < 0 {
		return false
	}
	need := stringLen(k.Video) + 1 + stringLen(k.Event) + binary.MaxVarintLen64 + binary.MaxVarintLen16 + len(state)
	buf := l.b.open(counterLogTag, need, MaxBlockBytes)
	if len(buf) == blockHeader { // a new record: nothing to refer to
		l.video, l.state, l.names = "", nil, l.names[:0]
	}
	if k.Video == l.video {
		buf = append(buf, 0)
	} else {
		buf = appendString(buf, k.Video)
		l.video = k.Video
	}
	name := logName{k.Event, expiresMs}
	if i := slices.Index(l.names, name); i >= 0 {
		buf = binary.AppendUvarint(buf, uint64(i+1))
	} else {
		buf = append(buf, 0)
		buf = appendString(buf, k.Event)
		buf = binary.AppendUvarint(buf, uint64(expiresMs))
		if len(l.names) < maxLogNames {
			l.names = append(l.names, name)
		}
	}
	if bytes.Equal(state, l.state) {
		buf = append(buf, 0)
	} else {
		buf = binary.AppendUvarint(buf, uint64(len(state)))
		buf = append(buf, state...)
		l.state = buf[len(buf)-len(state):] // written bytes never change
	}
	l.b.added(buf)
	return true
}

// Mutations are the writes that store the log records, under keys unique by
// seq. The log hands its buffers over and is empty again.
func (l *CounterLog) Mutations(seq func() uint64) []Mutation {
	vals := l.b.values()
	muts := make([]Mutation, len(vals))
	for i, v := range vals {
		muts[i] = Mutation{Key: counterLogKey(seq()), Value: v}
	}
	return muts
}

func counterLogKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixCounterLog}, seq)
}

// decodeCounterLog calls fn with every state of the log record v, until fn
// returns an error (returned as is). A malformed record is an error wrapping
// ErrCorrupt, found before fn sees any state of it.
func decodeCounterLog(v []byte, fn func(k crdt.Key, c crdt.PNCounter, expiresMs int64) error) error {
	if len(v) > 0 && v[0] == counterLogTagV6 {
		return decodeCounterLogV6(v, fn)
	}
	n, err := blockCount(v, counterLogTag, minLogStateBytes)
	if err != nil {
		return err
	}
	states := make([]logState, n)
	r := blockReader{v: v, off: blockHeader}
	var names []logName
	for i := range states {
		s := &states[i]
		switch n := r.uvarint(); {
		case r.err != nil:
		case n > 0:
			s.k.Video = r.strOf(n, 1)
		case i == 0:
			r.fail("no video to refer to")
		default:
			s.k.Video = states[i-1].k.Video
		}
		switch ref := r.uvarint(); {
		case r.err != nil:
		case ref == 0:
			name := logName{event: r.id()}
			exp := r.uvarint()
			if exp > 1<<62 {
				r.fail(fmt.Sprintf("expiry %d", exp))
			}
			name.expiresMs = int64(exp)
			if len(names) < maxLogNames {
				names = append(names, name)
			}
			s.k.Event, s.exp = name.event, name.expiresMs
		case ref > uint64(len(names)):
			r.fail(fmt.Sprintf("name %d of %d", ref, len(names)))
		default:
			s.k.Event, s.exp = names[ref-1].event, names[ref-1].expiresMs
		}
		switch size := r.uvarint(); {
		case r.err != nil:
		case size == 0 && i == 0:
			r.fail("no state to refer to")
		case size == 0:
			s.c = states[i-1].c.Clone() // fn may merge into what it is given
		case size > uint64(len(v)-r.off):
			r.fail(fmt.Sprintf("state of %d bytes", size))
		default:
			if err := s.c.UnmarshalBinary(v[r.off : r.off+int(size)]); err != nil {
				return fmt.Errorf("%w: counter log: state of %s: %v", ErrCorrupt, s.k, err)
			}
			r.off += int(size)
		}
		if r.err != nil {
			return r.err
		}
	}
	return emitLogStates(&r, states, fn)
}

// logState is one state of a counter log record, decoded.
type logState struct {
	k   crdt.Key
	c   crdt.PNCounter
	exp int64
}

// emitLogStates checks that r, having read states, is at the end of its
// record, then calls fn with each state in order until it returns an error.
func emitLogStates(r *blockReader, states []logState, fn func(k crdt.Key, c crdt.PNCounter, expiresMs int64) error) error {
	if r.off != len(r.v) {
		return fmt.Errorf("%w: counter log: %d bytes after the last state", ErrCorrupt, len(r.v)-r.off)
	}
	for _, s := range states {
		if err := fn(s.k, s.c, s.exp); err != nil {
			return err
		}
	}
	return nil
}

// decodeCounterLogV6 is decodeCounterLog of a format-6 record: every state
// written out in full.
func decodeCounterLogV6(v []byte, fn func(k crdt.Key, c crdt.PNCounter, expiresMs int64) error) error {
	n, err := blockCount(v, counterLogTagV6, minLogStateBytesV6)
	if err != nil {
		return err
	}
	states := make([]logState, n)
	r := blockReader{v: v, off: blockHeader}
	for i := range states {
		s := &states[i]
		s.k = crdt.Key{Video: r.id(), Event: r.id()}
		exp := r.uvarint()
		size := r.uvarint()
		if r.err != nil {
			return r.err
		}
		if exp > 1<<62 {
			r.fail(fmt.Sprintf("expiry %d", exp))
			return r.err
		}
		if size == 0 || size > uint64(len(v)-r.off) {
			r.fail(fmt.Sprintf("state of %d bytes", size))
			return r.err
		}
		if err := s.c.UnmarshalBinary(v[r.off : r.off+int(size)]); err != nil {
			return fmt.Errorf("%w: counter log: state of %s: %v", ErrCorrupt, s.k, err)
		}
		r.off += int(size)
		s.exp = int64(exp)
	}
	return emitLogStates(&r, states, fn)
}

// CounterLogDeletes are the writes that delete the log records named by
// keys (as Mutations made them), once every state they hold is in its 'c'
// entry, durably.
func CounterLogDeletes(keys [][]byte) []Mutation {
	muts := make([]Mutation, len(keys))
	for i, k := range keys {
		muts[i] = Mutation{Key: k, Delete: true}
	}
	return muts
}

// ReplayCounterLog merges every state left in the counter log (by a process
// that stopped before checkpointing it) into its 'c' entry, durably, then
// deletes the log; it returns how many states it merged. States expired at
// nowMs (unix ms) are dropped. Call it at start, before anything reads a
// counter and before a Committer writes: afterwards the 'c' entries hold
// every durable counter state.
func (s *Store) ReplayCounterLog(nowMs int64) (int, error) {
	type merged struct {
		c   crdt.PNCounter
		exp int64 // the latest expiry logged; 0: never
	}
	states := make(map[crdt.Key]*merged)
	var logKeys [][]byte
	n := 0
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixCounterLog}}) // records ≤ 1,000 B: in the LSM tree, see ForEachCounter
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			logKeys = append(logKeys, item.KeyCopy(nil))
			err := item.Value(func(v []byte) error {
				return decodeCounterLog(v, func(k crdt.Key, c crdt.PNCounter, exp int64) error {
					n++
					m := states[k]
					if m == nil {
						states[k] = &merged{c: c, exp: exp}
						return nil
					}
					m.c.Merge(c)
					if exp == 0 || m.exp == 0 {
						m.exp = 0
					} else {
						m.exp = max(m.exp, exp)
					}
					return nil
				})
			})
			if err != nil {
				return fmt.Errorf("counter log record %x: %w", item.Key(), err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("replay counter log: %w", err)
	}
	if len(logKeys) == 0 {
		return 0, nil
	}
	var muts []Mutation
	err = s.db.View(func(txn *badger.Txn) error {
		for k, m := range states {
			if m.exp != 0 && m.exp <= nowMs {
				continue // expired: nothing reads it any more
			}
			cur, _, err := counterIn(txn, k)
			if err != nil {
				return err
			}
			cur.Merge(m.c)
			mut, err := CounterMutation(k, cur)
			if err != nil {
				return err
			}
			if m.exp != 0 {
				mut.TTL = time.Duration(m.exp-nowMs) * time.Millisecond
			}
			muts = append(muts, mut)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("replay counter log: %w", err)
	}
	// The merged states are durable before the log goes: a crash between
	// the two replays the log again, which merges to the same states.
	if err := s.writeSync(muts); err != nil {
		return 0, fmt.Errorf("replay counter log: write counters: %w", err)
	}
	if err := s.writeSync(CounterLogDeletes(logKeys)); err != nil {
		return 0, fmt.Errorf("replay counter log: delete log: %w", err)
	}
	return n, nil
}

// writeSync writes muts outside any committer and makes them durable.
func (s *Store) writeSync(muts []Mutation) error {
	if len(muts) == 0 {
		return nil
	}
	if err := s.write(muts); err != nil {
		return err
	}
	return s.db.Sync()
}

// CounterLogRecords is the number of counter log records on disk.
func (s *Store) CounterLogRecords() (int, error) {
	n := 0
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixCounterLog}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("count counter log records: %w", err)
	}
	return n, nil
}
