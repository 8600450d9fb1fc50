package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Badger drops an expired record (TTL passed) only when a compaction
// rewrites the table holding it. Records of most kinds are keyed by video,
// so new writes overlap their tables and compactions keep rewriting them.
// But raw events ('e', keyed by ingest time) and claim blocks ('b', keyed
// by window) are keyed by time: every new key sorts after every old one,
// so once a table of them reaches the last level no compaction ever reads
// it again, and its records stay on disk long after they expired (measured:
// 60% of a log's expired events were still stored after 280 MB more were
// written). A Sweeper deletes them explicitly: a deletion marker sorts into
// the tables above and meets the old record in a compaction, which drops
// both, and reports the space of values in the value log as discardable so
// that value-log GC (CollectValueLog) can give it back.

// sweptPrefixes are the kinds of records keyed by time.
var sweptPrefixes = [...]byte{prefixEvent, prefixClaimBlock}

// sweepChunk is how many deletions one Badger write of a sweep holds.
const sweepChunk = 4096

// Sweeper deletes expired records of the kinds keyed by time. It keeps, per
// kind, the key its next pass starts from, so a pass reads only what expired
// since the last one. It is not safe for concurrent use.
type Sweeper struct {
	s    *Store
	from [len(sweptPrefixes)][]byte
}

// NewSweeper returns a Sweeper of s whose first pass starts at the oldest
// records.
func (s *Store) NewSweeper() *Sweeper {
	w := &Sweeper{s: s}
	for i, p := range sweptPrefixes {
		w.from[i] = []byte{p}
	}
	return w
}

// Pass deletes every record of the kinds keyed by time whose TTL has passed
// by now, in key order, up to the first record of each kind that is still
// live (keys grow with time, and one kind's records share a TTL, so the
// rest are live too; if a retention was lowered, the older records of the
// longer one hold back the sweep until they expire). It writes the deletions
// in Badger writes of sweepChunk, not through a Committer: a deletion lost
// in a crash is made again by the next pass. It returns how many records it
// deleted, and stops early, with ctx's error, when ctx ends.
func (w *Sweeper) Pass(ctx context.Context, now time.Time) (int, error) {
	nowSec := uint64(now.Unix())
	total := 0
	for i := range sweptPrefixes {
		for {
			if err := ctx.Err(); err != nil {
				return total, err
			}
			keys, next, more, err := w.s.expiredKeys(w.from[i], nowSec, sweepChunk)
			if err != nil {
				return total, err
			}
			if len(keys) > 0 {
				muts := make([]Mutation, len(keys))
				for j, k := range keys {
					muts[j] = Mutation{Key: k, Delete: true}
				}
				if err := w.s.write(muts); err != nil {
					return total, fmt.Errorf("sweep expired records: %w", err)
				}
				total += len(keys)
			}
			w.from[i] = next
			if !more {
				break
			}
		}
	}
	return total, nil
}

// expiredKeys returns up to max keys, from from on under from's first byte,
// whose newest version expired at or before nowSec (Badger's rule), and the
// key to start from next time. It stops at the first key that is live (no
// TTL, or one not passed): more is false then, and next is that key (or,
// past the last key, the prefix's end). Keys whose newest version is a
// deletion are passed over. Iterating all versions is what shows expired
// records at all: Badger hides them from ordinary reads.
func (s *Store) expiredKeys(from []byte, nowSec uint64, max int) (keys [][]byte, next []byte, more bool, err error) {
	prefix := from[:1]
	next = from
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{AllVersions: true, Prefix: prefix})
		defer it.Close()
		var last []byte
		for it.Seek(from); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()
			if last != nil && string(k) == string(last) {
				continue // an older version of a key already decided
			}
			last = item.KeyCopy(last[:0])
			exp := item.ExpiresAt()
			switch {
			case exp == 0 && item.IsDeletedOrExpired():
				continue // deleted already (a marker has no TTL)
			case exp == 0 || exp > nowSec:
				next = item.KeyCopy(nil)
				return nil
			}
			if len(keys) == max {
				next, more = item.KeyCopy(nil), true
				return nil
			}
			keys = append(keys, item.KeyCopy(nil))
		}
		// Past the last key of the prefix: start after it next time.
		if last != nil {
			next = append(append([]byte(nil), last...), 0)
		}
		return nil
	})
	if err != nil {
		return nil, from, false, fmt.Errorf("find expired records under %q: %w", prefix, err)
	}
	return keys, next, more, nil
}

// CollectValueLog runs Badger's value-log GC until it finds no log file
// worth rewriting (more than half discardable) or ctx ends, at most rounds
// files, and returns how many it rewrote. A file's discardable bytes are
// what compactions dropped: expired and deleted records whose values were
// too large for the LSM tree (event blocks of large ingest calls), which
// Sweeper's deletions make compactions drop.
func (s *Store) CollectValueLog(ctx context.Context, rounds int) (int, error) {
	if s.db.Opts().InMemory {
		return 0, nil
	}
	n := 0
	for n < rounds && ctx.Err() == nil {
		err := s.db.RunValueLogGC(0.5)
		switch {
		case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected):
			return n, nil
		case err != nil:
			return n, fmt.Errorf("value log GC: %w", err)
		}
		n++
	}
	return n, ctx.Err()
}
