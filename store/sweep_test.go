package store

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// sweepStore opens a store on dir with 1 MiB memtables and value-log files,
// so that a few MB of records make several of each.
func sweepStore(t *testing.T, dir string) *Store {
	t.Helper()
	o := DefaultOptions(dir)
	o.MemTableBytes = 1 << 20
	o.ValueLogFileBytes = 1 << 20
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// storedBefore counts the keys under prefix whose time (the u64 after the
// prefix byte) is below at and of which any version is still stored, expired
// and deleted ones included (what is on disk, not what reads see).
func storedBefore(t *testing.T, s *Store, prefix byte, at uint64) int {
	t.Helper()
	n := 0
	var last []byte
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{AllVersions: true, Prefix: []byte{prefix}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if string(k) == string(last) || len(k) != 25 {
				continue
			}
			last = append(last[:0], k...)
			if binary.BigEndian.Uint64(k[1:9]) < at {
				n++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// vlogBytes is the size of dir's value-log files.
func vlogBytes(t *testing.T, dir string) int64 {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// TestSweepExpired: records keyed by time (event blocks large and small,
// claim blocks) that expired are deleted by a pass, the live ones after them
// are not; the next pass, and a new Sweeper's, find nothing more; once
// compaction has run they are gone from the LSM tree, and value-log GC gives
// back the value-log files of the large blocks.
func TestSweepExpired(t *testing.T) {
	dir := t.TempDir()
	s := sweepStore(t, dir)
	pad := strings.Repeat("x", 90)
	seq := uint64(0)
	next := func() uint64 { seq++; return seq }
	// log writes calls ingest calls at ms from, from+1, ...: every tenth of
	// 300 events (a 30 KB block, in the value log), the others of 3 (in the
	// tree); and one claim block per call, in window ms.
	log := func(from, calls int, ttl time.Duration) (blocks int) {
		for ms := from; ms < from+calls; ms++ {
			per := 3
			if ms%10 == 0 {
				per = 300
			}
			var b EventBlock
			var c ClaimBlock
			for i := range per {
				b.Add("video", "view", fmt.Sprintf("user-%d-%d-%s", ms, i, pad), int64(ms), FateCounted)
			}
			c.Add(ClaimKey{Video: "video", User: fmt.Sprintf("user-%d", ms), Event: "view"}, int64(ms))
			muts := append(b.Mutations(int64(ms), 7, next, ttl), c.Mutations(uint64(ms), 7, next, ttl)...)
			if err := s.write(muts); err != nil {
				t.Fatal(err)
			}
			blocks += len(muts)
		}
		return blocks
	}
	const oldCalls, liveCalls = 1000, 200
	old := log(0, oldCalls, time.Second)
	// Badger takes a TTL from the time of each write, so the last old
	// block expires 1 s after the old ones were written, however long that
	// took on a loaded machine.
	wrote := time.Now()
	live := log(oldCalls, liveCalls, time.Hour)
	beforeGC := vlogBytes(t, dir)
	if beforeGC < 4<<20 {
		t.Fatalf("value log of %d bytes; want the large blocks there", beforeGC)
	}

	// Badger's TTLs are whole seconds: the old ones have passed 2.5 s after
	// the last was written (Pass takes the time it sweeps at; the deletions
	// hide what they delete).
	later := wrote.Add(2500 * time.Millisecond)
	w := s.NewSweeper()
	ctx := testCtx(t)
	if n, err := w.Pass(ctx, later); err != nil || n != old {
		t.Fatalf("first pass deleted %d (%v); want the %d expired blocks", n, err, old)
	}
	if n, err := w.Pass(ctx, later); err != nil || n != 0 {
		t.Fatalf("second pass deleted %d (%v); want none", n, err)
	}
	if n, err := s.NewSweeper().Pass(ctx, later); err != nil || n != 0 {
		t.Fatalf("a new sweeper deleted %d (%v); want none (deleted already)", n, err)
	}
	events := 0
	if err := s.ForEachEvent(0, 1<<40, func(Event) error { events++; return nil }); err != nil {
		t.Fatal(err)
	}
	if want := liveCalls/10*300 + liveCalls*9/10*3; events != want {
		t.Fatalf("%d events readable after the sweep; want the %d live ones", events, want)
	}
	if live == 0 {
		t.Fatal("no live blocks")
	}

	// Reopen (which flushes the memtables holding the deletions), then
	// write other records until compactions have merged the deletions with
	// what they delete, which drops both.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = sweepStore(t, dir)
	defer s.Close()
	filler := make([]byte, 900)
	for i := 0; i < 8<<20/len(filler); i += 500 {
		muts := make([]Mutation, 500)
		for j := range muts {
			muts[j] = Mutation{Key: fmt.Appendf(nil, "f%09d", i+j), Value: filler}
		}
		if err := s.write(muts); err != nil {
			t.Fatal(err)
		}
	}
	for {
		if err := s.db.Flatten(1); err != nil {
			t.Fatal(err)
		}
		e, b := storedBefore(t, s, prefixEvent, oldCalls), storedBefore(t, s, prefixClaimBlock, oldCalls)
		if e == 0 && b == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d expired events and %d claim blocks still stored after compactions", e, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	n, err := s.CollectValueLog(ctx, 100)
	if err != nil || n == 0 {
		t.Fatalf("value-log GC rewrote %d files (%v); want the expired blocks' files", n, err)
	}
	// The old blocks were about 100 of 120 large ones: most of the log goes.
	if after := vlogBytes(t, dir); after > beforeGC/2 {
		t.Fatalf("value log %d bytes after GC, %d before; want most given back", after, beforeGC)
	}
}
