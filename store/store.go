package store

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/tallyhq/tally/crdt"
)

// formatVersion is the on-disk schema version this code writes and reads.
// Version 2 stores claim sets (crdt.Claims) where version 1 stored one claim;
// version 1 directories are migrated in place at open. Version 3 adds event
// blocks under 'e' keys and claim blocks under 'b' keys, which a version-2
// reader would not decode or see (and the "m" "retired" key); a version-2
// directory needs nothing to become one. Version 4 adds the counter log under
// 'l' keys, whose states a version-3 reader would not see; a version-3
// directory needs nothing to become one. Version 5 writes no claim block for
// a claim its node won alone while the event log outlives claims: the
// counted event is its record (region's claimTable.inEvents), which a
// version-4 reader would not load, and so would count a repeat again; a
// version-4 directory needs nothing to become one. Version 6 writes a
// unique-viewer chunk grown by local views only at the next checkpoint, and
// records under "m" "sketchmark" from which ingest time the counted events
// must be replayed into the sketches at start, which a version-5 reader
// would not do; a version-5 directory needs nothing to become one (every
// chunk is in its entry: the mark is set at open). Version 7 writes counter
// log records whose states refer to the video, event and state of earlier
// states of the record (counterLogTag), which a version-6 reader would
// refuse as corrupt; a version-6 directory needs nothing to become one (its
// records, counterLogTagV6, are still read).
const formatVersion = 7

// Options configures a Store.
type Options struct {
	// Dir is the data directory. Ignored when InMemory is set.
	Dir string
	// InMemory keeps everything in RAM (tests and the simulator); nothing survives Close.
	InMemory bool
	// CacheBytes is Badger's block cache size in bytes. Small by default: tally
	// keeps hot state in its own memory and shares a 2-core machine with its load.
	CacheBytes int64
	// MemTableBytes is the size of one Badger memtable in bytes.
	MemTableBytes int64
	// ValueLogFileBytes is the size at which Badger starts a new value-log
	// file (the unit value-log GC gives back). Default 64 MiB.
	ValueLogFileBytes int64
	// Logger receives Badger's warnings and errors. Nil discards them.
	Logger *slog.Logger
	// NewReplicaID, if set, draws replica IDs instead of crypto/rand (the
	// simulator makes them deterministic). It must not return 0.
	NewReplicaID func() crdt.ReplicaID
}

// DefaultOptions returns options for a store in dir: two 64 MiB memtables,
// a 16 MiB block cache (tally keeps hot state in its own memory), two
// compactors, Snappy off (values are small and compress poorly).
func DefaultOptions(dir string) Options {
	return Options{
		Dir:               dir,
		CacheBytes:        16 << 20,
		MemTableBytes:     64 << 20,
		ValueLogFileBytes: 64 << 20,
	}
}

// InMemoryOptions returns options for a RAM-only store, for tests.
func InMemoryOptions() Options {
	o := DefaultOptions("")
	o.InMemory = true
	o.MemTableBytes = 16 << 20 // tests open many
	return o
}

// Store is tally's Badger database.
type Store struct {
	db         *badger.DB
	newID      func() crdt.ReplicaID // nil: crypto/rand
	syncWrites bool                  // Badger fsyncs each write itself (Open)
	advisor    *logAdvisor           // keeps Badger's log maps off readahead (advise.go)
}

// Open opens (creating if needed) the store described by o.
func Open(o Options) (*Store, error) {
	vlogBytes := o.ValueLogFileBytes
	if vlogBytes == 0 {
		vlogBytes = DefaultOptions("").ValueLogFileBytes
	}
	bo := badger.DefaultOptions(o.Dir).
		WithInMemory(o.InMemory).
		// Every Badger write request is fsynced to the write-ahead log of the
		// memtable it went into. DB.Sync syncs the active memtable's log
		// alone: a batch that Badger split into several requests across a
		// memtable rotation would otherwise leave its first part in a log
		// nothing syncs until the memtable is flushed. The committer's batch
		// is one request (or a few, when huge), so this is one fsync per
		// batch, as before.
		WithSyncWrites(!o.InMemory).
		WithNumVersionsToKeep(1).
		WithMemTableSize(o.MemTableBytes).
		WithNumMemtables(2).
		// Fewer, larger compactions (issue 9). With 16 MiB memtables, two
		// level-0 tables and Badger's 10 MiB level 1, every flush set off
		// compactions down the levels, and writing their tables (copy and
		// msync) took a fifth of the CPU of a hot batch:
		// BenchmarkHTTPBatch/hot over 10M views went 174k -> 235k views/s.
		WithNumLevelZeroTables(5).
		WithNumLevelZeroTablesStall(15).
		WithBaseLevelSize(64 << 20).
		WithBaseTableSize(8 << 20).
		WithBlockCacheSize(o.CacheBytes).
		WithIndexCacheSize(8 << 20).
		WithValueLogFileSize(vlogBytes).
		WithValueThreshold(1 << 10).
		WithNumCompactors(2).
		WithNumGoroutines(2).
		WithCompression(options.None).
		WithMetricsEnabled(false).
		WithLogger(badgerLogger{o.Logger})
	if o.InMemory {
		// No value log in memory: every value must fit under the threshold.
		bo = bo.WithDir("").WithValueDir("").WithValueThreshold(MaxEventBlockBytes + 1<<10)
	}
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("open badger at %q: %w", o.Dir, err)
	}
	advisor, err := newLogAdvisor(o.Dir, o.InMemory, o.Logger)
	if err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{db: db, newID: o.NewReplicaID, syncWrites: !o.InMemory, advisor: advisor}
	if err := s.checkFormat(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the database. Callers stop their Committer first.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close badger: %w", err)
	}
	return nil
}

// Sync forces everything written so far to stable storage.
func (s *Store) Sync() error {
	if err := s.db.Sync(); err != nil {
		return fmt.Errorf("sync badger: %w", err)
	}
	return nil
}

// Size reports Badger's LSM and value-log sizes in bytes.
func (s *Store) Size() (lsm, vlog int64) { return s.db.Size() }

var (
	metaReplica = metaKey("replica")
	metaDirty   = metaKey("dirty")
	metaFormat  = metaKey("format")
	metaRetired = metaKey("retired")
	metaSketch  = metaKey("sketchmark")
)

// SketchMark is the ingest time (unix ms) from which counted views in the
// raw event log may hold unique-viewer registers that are in no chunk entry
// yet: a node replays them into its sketches at start. ok is false if none
// was recorded (a new directory, or one of format 5 and older, whose
// chunks are all in their entries).
func (s *Store) SketchMark() (ms int64, ok bool, err error) {
	v, ok, err := s.getUint64(metaSketch)
	if err != nil {
		return 0, false, fmt.Errorf("read sketch mark: %w", err)
	}
	return int64(v), ok, nil
}

// SetSketchMark records ms as the sketch mark, durably, now.
func (s *Store) SetSketchMark(ms int64) error {
	if err := s.setSync(metaSketch, binary.BigEndian.AppendUint64(nil, uint64(max(ms, 0)))); err != nil {
		return fmt.Errorf("write sketch mark: %w", err)
	}
	return nil
}

// SketchMarkMutation records ms as the sketch mark in a batch: the batch
// that writes the last chunks a checkpoint owed.
func SketchMarkMutation(ms int64) Mutation {
	return Mutation{Key: metaSketch, Value: binary.BigEndian.AppendUint64(nil, uint64(max(ms, 0)))}
}

func metaKey(name string) []byte { return append([]byte{prefixMeta}, name...) }

func (s *Store) checkFormat() error {
	v, ok, err := s.getUint64(metaFormat)
	if err != nil {
		return fmt.Errorf("read format version: %w", err)
	}
	if ok && v > formatVersion {
		return fmt.Errorf("data directory has format %d, this tally reads up to %d", v, formatVersion)
	}
	if ok && v == 1 {
		if err := s.migrateClaimsV1(); err != nil {
			return err
		}
	}
	if !ok || v < formatVersion {
		return s.setSync(metaFormat, binary.BigEndian.AppendUint64(nil, formatVersion))
	}
	return nil
}

// Identity is what a node learns about itself when it opens its store.
type Identity struct {
	Replica crdt.ReplicaID
	// Previous is the replica ID the node had before, if it had to take a new one.
	Previous crdt.ReplicaID
	// Reason says why a new replica ID was taken: "new data directory" or
	// "unclean shutdown with async durability"; empty if the old one was kept.
	Reason string
}

// OpenIdentity loads this node's replica ID, taking a fresh random one for a
// new data directory or after an async run that did not shut down cleanly.
// With async set it then marks the directory dirty (durably) until
// MarkClean is called at a clean shutdown.
func (s *Store) OpenIdentity(async bool) (Identity, error) {
	old, haveOld, err := s.getUint64(metaReplica)
	if err != nil {
		return Identity{}, fmt.Errorf("read replica id: %w", err)
	}
	_, dirty, err := s.getUint64(metaDirty)
	if err != nil {
		return Identity{}, fmt.Errorf("read dirty marker: %w", err)
	}
	id := Identity{Replica: crdt.ReplicaID(old)}
	switch {
	case !haveOld:
		id.Reason = "new data directory"
	case dirty:
		id.Previous, id.Reason = crdt.ReplicaID(old), "unclean shutdown with async durability"
	}
	if id.Previous != 0 {
		// Recorded before the new ID: claims made under the old one stay in
		// this store, and their owed compensations fall to its successors.
		if err := s.retire(id.Previous); err != nil {
			return Identity{}, err
		}
	}
	if id.Reason != "" {
		if id.Replica, err = s.newReplicaID(crdt.ReplicaID(old)); err != nil {
			return Identity{}, err
		}
		if err := s.setSync(metaReplica, binary.BigEndian.AppendUint64(nil, uint64(id.Replica))); err != nil {
			return Identity{}, fmt.Errorf("store replica id: %w", err)
		}
	}
	if async {
		err = s.setSync(metaDirty, binary.BigEndian.AppendUint64(nil, 1))
	} else if dirty {
		err = s.deleteSync(metaDirty)
	}
	if err != nil {
		return Identity{}, fmt.Errorf("update dirty marker: %w", err)
	}
	return id, nil
}

// RetiredReplicas returns every replica ID this store's node had before its
// current one (oldest first): the IDs it gave up after unclean async
// shutdowns. Claims made under them are still in the store, so the node owes
// whatever compensation they come to owe.
func (s *Store) RetiredReplicas() ([]crdt.ReplicaID, error) {
	var out []crdt.ReplicaID
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(metaRetired)
		if err != nil {
			return err
		}
		return item.Value(func(b []byte) error {
			if len(b)%8 != 0 {
				return fmt.Errorf("key %q: value of %d bytes, want a multiple of 8", metaRetired, len(b))
			}
			for ; len(b) > 0; b = b[8:] {
				out = append(out, crdt.ReplicaID(binary.BigEndian.Uint64(b)))
			}
			return nil
		})
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read retired replica ids: %w", err)
	}
	return out, nil
}

// retire adds r to the retired replica IDs, durably, unless it is there.
func (s *Store) retire(r crdt.ReplicaID) error {
	ids, err := s.RetiredReplicas()
	if err != nil {
		return err
	}
	if slices.Contains(ids, r) {
		return nil
	}
	var b []byte
	for _, id := range append(ids, r) {
		b = binary.BigEndian.AppendUint64(b, uint64(id))
	}
	if err := s.setSync(metaRetired, b); err != nil {
		return fmt.Errorf("record retired replica id: %w", err)
	}
	return nil
}

// MarkClean records that everything acknowledged is durable, so the next start
// may keep the replica ID. Call it after the Committer has stopped.
func (s *Store) MarkClean() error {
	if err := s.deleteSync(metaDirty); err != nil {
		return fmt.Errorf("clear dirty marker: %w", err)
	}
	return nil
}

func (s *Store) newReplicaID(not crdt.ReplicaID) (crdt.ReplicaID, error) {
	if s.newID != nil {
		for {
			if id := s.newID(); id != 0 && id != not {
				return id, nil
			}
		}
	}
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("generate replica id: %w", err)
		}
		if id := crdt.ReplicaID(binary.BigEndian.Uint64(b[:])); id != 0 && id != not {
			return id, nil
		}
	}
}

func (s *Store) getUint64(key []byte) (uint64, bool, error) {
	var v uint64
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		return item.Value(func(b []byte) error {
			if len(b) != 8 {
				return fmt.Errorf("key %q: value of %d bytes, want 8", key, len(b))
			}
			v = binary.BigEndian.Uint64(b)
			return nil
		})
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, false, nil
	}
	return v, err == nil, err
}

func (s *Store) setSync(key, val []byte) error {
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(key, val) }); err != nil {
		return err
	}
	return s.db.Sync()
}

func (s *Store) deleteSync(key []byte) error {
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(key) }); err != nil {
		return err
	}
	return s.db.Sync()
}

// badgerLogger adapts slog to Badger's logger; Badger's info chatter is dropped.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	if b.l != nil {
		b.l.Error("badger: " + fmt.Sprintf(f, a...))
	}
}

func (b badgerLogger) Warningf(f string, a ...any) {
	if b.l != nil {
		b.l.Warn("badger: " + fmt.Sprintf(f, a...))
	}
}

func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}
