package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/y"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/tallyhq/tally/crdt"
)

// Key prefixes; see the package doc for the schema.
const (
	prefixMeta    = 'm'
	prefixCounter = 'c'
	prefixClaim   = 'd'
	// prefixClaimBlock starts a claim block's key (blocks.go).
	prefixClaimBlock = 'b'
	prefixEvent      = 'e'
)

// maxIDLen is the longest ID the schema is built for; longer keys are rejected
// when decoding, as corrupt.
const maxIDLen = 128

// ErrCorrupt is wrapped by errors about stored bytes that do not decode.
var ErrCorrupt = errors.New("store: corrupt record")

// CounterKey is the Badger key of counter k.
func CounterKey(k crdt.Key) []byte {
	b := make([]byte, 0, 2+len(k.Video)+len(k.Event))
	b = append(b, prefixCounter)
	b = append(b, k.Video...)
	b = append(b, 0)
	return append(b, k.Event...)
}

// ParseCounterKey is the inverse of CounterKey.
func ParseCounterKey(b []byte) (crdt.Key, error) {
	if len(b) < 4 || b[0] != prefixCounter {
		return crdt.Key{}, fmt.Errorf("%w: counter key %q", ErrCorrupt, b)
	}
	video, event, ok := bytes.Cut(b[1:], []byte{0})
	if !ok || len(video) == 0 || len(event) == 0 || len(video) > maxIDLen || len(event) > maxIDLen {
		return crdt.Key{}, fmt.Errorf("%w: counter key %q", ErrCorrupt, b)
	}
	return crdt.Key{Video: string(video), Event: string(event)}, nil
}

// CounterMutation is the write that stores state c for key k.
func CounterMutation(k crdt.Key, c crdt.PNCounter) (Mutation, error) {
	v, err := c.MarshalBinary()
	if err != nil {
		return Mutation{}, fmt.Errorf("encode counter %s: %w", k, err)
	}
	return CounterValueMutation(k, v), nil
}

// CounterValueMutation is the write that stores v for key k, where v is a
// state already encoded in the canonical form of crdt.PNCounter.MarshalBinary
// (by AppendBinary, or by crdt.AppendChunkState), for callers that encode
// without building a PNCounter. v is stored as given, not checked or copied:
// the caller must not modify it afterwards.
func CounterValueMutation(k crdt.Key, v []byte) Mutation {
	return Mutation{Key: CounterKey(k), Value: v}
}

// Counter reads the stored state of k; ok is false if it has none.
func (s *Store) Counter(k crdt.Key) (c crdt.PNCounter, ok bool, err error) {
	err = s.db.View(func(txn *badger.Txn) error {
		c, ok, err = counterIn(txn, k)
		return err
	})
	return c, ok, err
}

// counterIn reads the stored state of k in txn; ok is false if it has none.
func counterIn(txn *badger.Txn, k crdt.Key) (c crdt.PNCounter, ok bool, err error) {
	item, err := txn.Get(CounterKey(k))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return crdt.PNCounter{}, false, nil
	case err != nil:
		return crdt.PNCounter{}, false, fmt.Errorf("read counter %s: %w", k, err)
	}
	if err := item.Value(c.UnmarshalBinary); err != nil {
		return crdt.PNCounter{}, false, fmt.Errorf("read counter %s: %w", k, err)
	}
	return c, true, nil
}

// ForEachCounter calls fn for every stored counter, in key order, until fn
// returns an error.
func (s *Store) ForEachCounter(fn func(crdt.Key, crdt.PNCounter) error) error {
	return s.forEachCounterIn(nil, nil, nil, fn)
}

// ForEachCounterParallel is ForEachCounter over up to workers goroutines,
// each walking its own part of the counter keys (split where Badger's tables
// end, so that the parts hold about as many keys; one part when the tables
// cannot tell): fn is called concurrently, must be safe for that, and must
// not depend on the order it sees keys in. Each part reads in its own
// transaction, so the parts see one state only when nothing writes (as at
// Open). The first error fn or a decode returns stops every part and is
// returned. Open's scan of tens of millions of counters is one core's work
// otherwise (issue 9).
func (s *Store) ForEachCounterParallel(workers int, fn func(crdt.Key, crdt.PNCounter) error) error {
	bounds := s.counterSplits(workers)
	if len(bounds) == 0 {
		return s.ForEachCounter(fn)
	}
	return inParts(nil, bounds, func(lo, hi []byte, stop *atomic.Bool) error { return s.forEachCounterIn(lo, hi, stop, fn) })
}

// inParts runs scan over the key ranges [lo, bounds[0]), [bounds[0],
// bounds[1]), ... [bounds[n-1], nil) at once (nil: no bound), stops every
// part once one fails, and returns the first error.
func inParts(lo []byte, bounds [][]byte, scan func(lo, hi []byte, stop *atomic.Bool) error) error {
	var stop atomic.Bool
	errs := make([]error, len(bounds)+1)
	var wg sync.WaitGroup
	for i := range errs {
		from, to := lo, []byte(nil)
		if i > 0 {
			from = bounds[i-1]
		}
		if i < len(bounds) {
			to = bounds[i]
		}
		wg.Go(func() {
			if errs[i] = scan(from, to, &stop); errs[i] != nil {
				stop.Store(true)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil && !errors.Is(err, errStopped) {
			return err
		}
	}
	return nil
}

// errStopped ends a part of ForEachCounterParallel after another failed.
var errStopped = errors.New("store: scan stopped")

// counterSplits returns up to parts-1 counter keys, ascending, that split
// the counter keys into parts: the first and last keys of Badger's tables
// that are counter keys, taken evenly. Tables are of about one size, so the
// parts are of about as many keys when counters fill many tables; with few
// tables there may be no split at all.
func (s *Store) counterSplits(parts int) [][]byte {
	return s.splits(prefixCounter, nil, parts)
}

// splits is counterSplits for the keys of prefix from key lo on (nil: all).
func (s *Store) splits(prefix byte, lo []byte, parts int) [][]byte {
	if parts < 2 {
		return nil
	}
	var keys [][]byte
	for _, ti := range s.db.Tables() {
		for _, k := range [][]byte{y.ParseKey(ti.Left), y.ParseKey(ti.Right)} {
			if len(k) > 0 && k[0] == prefix && bytes.Compare(k, lo) > 0 {
				keys = append(keys, k)
			}
		}
	}
	slices.SortFunc(keys, bytes.Compare)
	keys = slices.CompactFunc(keys, bytes.Equal)
	var bounds [][]byte
	for i := 1; i < parts && len(keys) > 1; i++ {
		// Never the first key (the part below it would be empty), nor one
		// already taken.
		k := keys[len(keys)*i/parts]
		if bytes.Compare(k, keys[0]) > 0 && (len(bounds) == 0 || bytes.Compare(k, bounds[len(bounds)-1]) > 0) {
			bounds = append(bounds, k)
		}
	}
	return bounds
}

// forEachCounterIn calls fn with every counter whose key is in [lo, hi)
// (nil: no bound), in key order, until fn fails or stop is set.
func (s *Store) forEachCounterIn(lo, hi []byte, stop *atomic.Bool, fn func(crdt.Key, crdt.PNCounter) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		// Counter states are small, in the LSM tree (ValueThreshold): read
		// in place, without the goroutine per item a prefetch starts.
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixCounter}})
		defer it.Close()
		start := lo
		if start == nil {
			start = []byte{prefixCounter}
		}
		for it.Seek(start); it.Valid(); it.Next() {
			item := it.Item()
			if hi != nil && bytes.Compare(item.Key(), hi) >= 0 {
				return nil
			}
			if stop != nil && stop.Load() {
				return errStopped
			}
			k, err := ParseCounterKey(item.Key())
			if err != nil {
				return err
			}
			var c crdt.PNCounter
			if err := item.Value(c.UnmarshalBinary); err != nil {
				return fmt.Errorf("decode counter %s: %w", k, err)
			}
			if err := fn(k, c); err != nil {
				return err
			}
		}
		return nil
	})
}

// ClaimKey names a dedup claim; see crdt.ClaimKey.
type ClaimKey = crdt.ClaimKey

// claimKeyBytes is the Badger key of the claim set of k.
func claimKeyBytes(k ClaimKey) []byte {
	subject := k.Subject()
	b := make([]byte, 0, 11+len(k.Video)+len(subject))
	b = append(b, prefixClaim)
	b = append(b, k.Video...)
	b = append(b, 0)
	b = append(b, subject...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint64(b, k.Window)
}

// parseClaimKey is the inverse of claimKeyBytes.
func parseClaimKey(b []byte) (ClaimKey, error) {
	if len(b) < 13 || b[0] != prefixClaim || b[len(b)-9] != 0 {
		return ClaimKey{}, fmt.Errorf("%w: claim key %q", ErrCorrupt, b)
	}
	video, subject, ok := bytes.Cut(b[1:len(b)-9], []byte{0})
	if !ok || len(video) == 0 || len(video) > maxIDLen {
		return ClaimKey{}, fmt.Errorf("%w: claim key %q", ErrCorrupt, b)
	}
	event, user := crdt.SplitSubject(string(subject))
	if len(user) == 0 || len(user) > maxIDLen || len(event) > maxIDLen || bytes.IndexByte([]byte(user), '/') >= 0 {
		return ClaimKey{}, fmt.Errorf("%w: claim key %q", ErrCorrupt, b)
	}
	return ClaimKey{Video: string(video), Event: event, User: user, Window: binary.BigEndian.Uint64(b[len(b)-8:])}, nil
}

// ClaimMutation is the write that stores the claim set c under k until ttl
// passes (0: forever).
func ClaimMutation(k ClaimKey, c crdt.Claims, ttl time.Duration) (Mutation, error) {
	v, err := c.State().MarshalBinary()
	if err != nil {
		return Mutation{}, fmt.Errorf("encode claims of %s/%s/%d: %w", k.Video, k.User, k.Window, err)
	}
	return Mutation{Key: claimKeyBytes(k), Value: v, TTL: ttl}, nil
}

// decodeClaims reads a stored claim set (format 1 values are migrated at
// open, see migrateClaimsV1).
func decodeClaims(v []byte) (crdt.Claims, error) {
	var st crdt.PNCounter
	if err := st.UnmarshalBinary(v); err != nil {
		return crdt.Claims{}, fmt.Errorf("%w: claims: %v", ErrCorrupt, err)
	}
	c, err := crdt.ClaimsFromState(st)
	if err != nil {
		return crdt.Claims{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return c, nil
}

// Claim reads the claim set stored under k; ok is false if there is none (or
// it expired).
func (s *Store) Claim(k ClaimKey) (c crdt.Claims, ok bool, err error) {
	err = s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(claimKeyBytes(k))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) (err error) {
			c, err = decodeClaims(v)
			return err
		})
	})
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return crdt.Claims{}, false, nil
	case err != nil:
		return crdt.Claims{}, false, fmt.Errorf("read claim %s/%s/%d: %w", k.Video, k.User, k.Window, err)
	}
	return c, true, nil
}

// ForEachClaim calls fn for every stored claim set not yet expired, until fn
// returns an error: first the claims of claim blocks (ClaimBlock), each as
// its one-claim set, then the claim sets stored on their own, in key order.
// A key can come more than once (a block's claim, and its set written on its
// own when it changed): the caller merges them. It returns the largest
// sequence number of the claim blocks read (0 if none): a node's block
// sequence must start above it.
func (s *Store) ForEachClaim(fn func(ClaimKey, crdt.Claims) error) (maxBlockSeq uint64, err error) {
	err = s.db.View(func(txn *badger.Txn) error {
		blocks := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 64, Prefix: []byte{prefixClaimBlock}})
		defer blocks.Close()
		for blocks.Rewind(); blocks.Valid(); blocks.Next() {
			item := blocks.Item()
			if err := item.Value(func(v []byte) error { return decodeClaimBlock(item.Key(), v, fn) }); err != nil {
				return err
			}
			maxBlockSeq = max(maxBlockSeq, binary.BigEndian.Uint64(item.Key()[17:])) // 25 bytes: decodeClaimBlock checked
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixClaim}}) // small values: see ForEachCounter
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			k, err := parseClaimKey(item.Key())
			if err != nil {
				return err
			}
			var c crdt.Claims
			if err := item.Value(func(v []byte) (err error) {
				c, err = decodeClaims(v)
				return err
			}); err != nil {
				return fmt.Errorf("claim %s/%s/%d: %w", k.Video, k.User, k.Window, err)
			}
			if err := fn(k, c); err != nil {
				return err
			}
		}
		return nil
	})
	return maxBlockSeq, err
}

// Fate says what became of an event.
type Fate uint8

// Fates of an event, as kept in the raw event log.
const (
	FateCounted     Fate = 1 // counted in this replica's slot
	FateDuplicate   Fate = 2 // a repeat inside the dedup window; not counted
	FateRateLimited Fate = 3 // over a per-user or per-IP rate limit; not counted
	// FateCompensated logs a compensation, not an arrival: this replica had
	// counted the view, its claim lost to an earlier one elsewhere, and it
	// took its count back (IngestMs is the time of the compensation).
	FateCompensated Fate = 4
	// FateDenied is a view from a user or address on the deny list; not counted.
	FateDenied Fate = 5
	// FateReapplied logs a like or unlike ("like" or "unlike") this replica
	// made again, as the user's next transition, because its transition
	// number had been taken by an older, concurrent one made elsewhere while
	// it was the user's latest intent; not an arrival (IngestMs is the time
	// of the step).
	FateReapplied Fate = 6
)

// String names the fate as the HTTP API reports it.
func (f Fate) String() string {
	switch f {
	case FateCounted:
		return "counted"
	case FateDuplicate:
		return "duplicate"
	case FateRateLimited:
		return "rate_limited"
	case FateCompensated:
		return "compensated"
	case FateDenied:
		return "denied"
	case FateReapplied:
		return "reapplied"
	}
	return fmt.Sprintf("fate(%d)", uint8(f))
}

// Event is one accepted event in the raw event log.
type Event struct {
	Video    string         `msgpack:"v"`
	Event    string         `msgpack:"e"`
	User     string         `msgpack:"u"`
	ClientMs int64          `msgpack:"ct"` // the client's timestamp, kept but never trusted
	IngestMs int64          `msgpack:"it"` // this node's clock at ingest
	Replica  crdt.ReplicaID `msgpack:"r"`
	Fate     Fate           `msgpack:"f"`
}

// EventMutation is the write that logs ev under a unique key until ttl passes.
// seq must be unique per replica and millisecond.
func EventMutation(ev Event, seq uint64, ttl time.Duration) (Mutation, error) {
	k := eventKey(ev.IngestMs, ev.Replica, seq)
	v, err := msgpack.Marshal(&ev)
	if err != nil {
		return Mutation{}, fmt.Errorf("encode event: %w", err)
	}
	return Mutation{Key: k, Value: v, TTL: ttl}, nil
}

// ForEachEvent calls fn for every logged event with fromMs ≤ IngestMs < toMs,
// in ingest order, until fn returns an error.
func (s *Store) ForEachEvent(fromMs, toMs int64, fn func(Event) error) error {
	return s.forEachEventIn(eventTimeKey(fromMs), eventTimeKey(toMs), nil, fn)
}

// ForEachEventParallel calls fn for every logged event with fromMs ≤
// IngestMs, until fn returns an error, in parts of the log scanned at once
// on up to workers goroutines, as ForEachCounterParallel does: fn must be
// safe for concurrent use and not depend on the order of events. A node
// reads the claims of a day of counted events at start with it.
func (s *Store) ForEachEventParallel(fromMs int64, workers int, fn func(Event) error) error {
	lo := eventTimeKey(fromMs)
	return inParts(lo, s.splits(prefixEvent, lo, workers), func(lo, hi []byte, stop *atomic.Bool) error {
		return s.forEachEventIn(lo, hi, stop, fn)
	})
}

// eventTimeKey is where the event keys of ingest time ms start.
func eventTimeKey(ms int64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixEvent}, uint64(max(ms, 0)))
}

// forEachEventIn calls fn with every event whose key is in [lo, hi) (nil
// hi: no bound), in key order, until fn fails or stop is set.
func (s *Store) forEachEventIn(lo, hi []byte, stop *atomic.Bool, fn func(Event) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: true, PrefetchSize: 64, Prefix: []byte{prefixEvent}})
		defer it.Close()
		for it.Seek(lo); it.Valid(); it.Next() {
			item := it.Item()
			if len(item.Key()) != 25 {
				return fmt.Errorf("%w: event key of %d bytes", ErrCorrupt, len(item.Key()))
			}
			if hi != nil && bytes.Compare(item.Key(), hi) >= 0 {
				return nil
			}
			if stop != nil && stop.Load() {
				return errStopped
			}
			key := item.Key()
			err := item.Value(func(v []byte) error {
				if len(v) > 0 && v[0] == eventBlockTag {
					return decodeEventBlock(v, int64(binary.BigEndian.Uint64(key[1:])), crdt.ReplicaID(binary.BigEndian.Uint64(key[9:])), fn)
				}
				var ev Event
				if err := decodeEvent(v, &ev); err != nil {
					return err
				}
				return fn(ev)
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
}

func decodeEvent(v []byte, ev *Event) error {
	// msgpack v5 allocates by declared lengths (a string, or a value of an
	// unknown field it skips) before it finds the input short: the size cap
	// and checkMsgpack make every declared length fit in these few bytes.
	// (The earlier belief that strings are read in 1 MiB chunks held, but a
	// fuzz run still grew a worker to 12 GB through such skips.)
	if len(v) > 4*maxIDLen+128 {
		return fmt.Errorf("%w: event of %d bytes", ErrCorrupt, len(v))
	}
	if err := checkMsgpack(v); err != nil {
		return fmt.Errorf("%w: event: %v", ErrCorrupt, err)
	}
	if err := msgpack.Unmarshal(v, ev); err != nil {
		return fmt.Errorf("%w: event: %v", ErrCorrupt, err)
	}
	return nil
}

// migrateClaimsV1 rewrites the claims of a format-1 directory, stored as one
// claim of 16 bytes (replica, ingest ms; both u64 BE), as claim sets, keeping
// their expiry. Values of other sizes are left for decodeClaims to judge.
func (s *Store) migrateClaimsV1() error {
	type rewrite struct {
		key, value []byte
		expiresAt  uint64
	}
	var rws []rewrite
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{prefixClaim}}) // small values: see ForEachCounter
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if len(v) != 16 {
				continue
			}
			c := crdt.NewClaims(crdt.ReplicaID(binary.BigEndian.Uint64(v)), int64(binary.BigEndian.Uint64(v[8:])))
			nv, err := c.State().MarshalBinary()
			if err != nil {
				return err
			}
			rws = append(rws, rewrite{item.KeyCopy(nil), nv, item.ExpiresAt()})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("migrate format-1 claims: %w", err)
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, rw := range rws {
		e := badger.NewEntry(rw.key, rw.value)
		e.ExpiresAt = rw.expiresAt
		if err := wb.SetEntry(e); err != nil {
			return fmt.Errorf("migrate format-1 claims: %w", err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("migrate format-1 claims: %w", err)
	}
	return s.Sync()
}
