package store

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestCommitLeavesBadgerLogsClean: after every group commit, no memory map
// of Badger's logs holds a dirty page (/proc/self/smaps): what the batch
// wrote is on disk, though Badger itself syncs nothing. Batches with small
// values (memtable log only) and with values that go to the value log
// alternate, over 1 MiB memtables and 1 MiB value log files, so that both
// logs move on to new files, some in the middle of a batch.
func TestCommitLeavesBadgerLogsClean(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("dirty pages of memory maps are read from /proc/self/smaps, which is Linux's")
	}
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	o := DefaultOptions(dir)
	o.MemTableBytes = 1 << 20
	o.ValueLogFileBytes = 1 << 20
	s, err := Open(o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	c := NewCommitter(s, CommitterConfig{})
	defer func() {
		if err := c.Close(); err != nil {
			t.Errorf("close committer: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	}()
	small, big := bytes.Repeat([]byte{'s'}, 200), bytes.Repeat([]byte{'b'}, valueThreshold+100)
	files := map[string]bool{}
	for i := range 200 { // ~3 MiB to the memtable logs, ~4 MiB to the value log
		val, n := small, 64
		if i%2 == 1 {
			val, n = big, 32
		}
		muts := make([]Mutation, n)
		for j := range muts {
			muts[j] = Mutation{Key: fmt.Appendf(nil, "%c%05d-%02d", prefixMeta, i, j), Value: val}
		}
		tk, err := c.Submit(muts...)
		if err != nil {
			t.Fatal(err)
		}
		if err := tk.Wait(testCtx(t)); err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
		for path, m := range logMaps(t, dir) {
			files[filepath.Base(path)] = true
			if m.dirtyKB != 0 {
				t.Fatalf("after commit %d, the map of %s has %d kB dirty: written and not synced", i, path, m.dirtyKB)
			}
		}
	}
	var mems, vlogs int
	for f := range files {
		switch {
		case strings.HasSuffix(f, ".mem"):
			mems++
		case strings.HasSuffix(f, ".vlog"):
			vlogs++
		}
	}
	if mems < 2 || vlogs < 2 {
		t.Fatalf("logs seen: %v; want the writes to have moved on to new memtable and value log files", files)
	}
}

// TestLogTailFollowsNewFiles: a log tail syncs its file and moves on to the
// files numbered after it as they appear, and to a file that did not exist
// yet when it was made.
func TestLogTailFollowsNewFiles(t *testing.T) {
	dir := t.TempDir()
	touch := func(name string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	touch("00007.mem")
	touch("00003.mem")
	touch("000002.vlog")
	touch("00012.sst")
	s, err := newLogSyncer(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if s.mem.fid != 7 || s.mem.f == nil || s.vlog.fid != 2 || s.vlog.f == nil {
		t.Fatalf("at open: mem fid %d (open %v), vlog fid %d (open %v); want 7 and 2, open", s.mem.fid, s.mem.f != nil, s.vlog.fid, s.vlog.f != nil)
	}
	touch("00008.mem")
	touch("00009.mem")
	touch("000003.vlog")
	if err := s.sync(false); err != nil {
		t.Fatal(err)
	}
	if s.mem.fid != 9 || s.vlog.fid != 2 {
		t.Fatalf("after sync(false): mem fid %d, vlog fid %d; want 9 (followed) and 2 (not synced)", s.mem.fid, s.vlog.fid)
	}
	if err := s.sync(true); err != nil {
		t.Fatal(err)
	}
	if s.vlog.fid != 3 || s.vlog.f == nil || s.vlog.f.Name() != filepath.Join(dir, "000003.vlog") {
		t.Fatalf("after sync(true): vlog fid %d; want 3, open", s.vlog.fid)
	}

	// Badger removed the current file and the next (flushed memtables)
	// and went on in later ones, with no sync between: the tail syncs what
	// is left, oldest first, and goes on from the newest.
	touch("00010.mem")
	touch("00012.mem")
	touch("00013.mem")
	for _, name := range []string{"00009.mem", "00010.mem"} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.sync(false); err != nil {
		t.Fatal(err)
	}
	if s.mem.fid != 13 || s.mem.f == nil {
		t.Fatalf("after the gap: mem fid %d (open %v); want 13, open", s.mem.fid, s.mem.f != nil)
	}

	// A log removed between the listing at open and its sync (a replayed
	// memtable, flushed) is no error.
	if err := syncPath(filepath.Join(dir, "00010.mem")); err != nil {
		t.Fatalf("sync of a removed log: %v", err)
	}

	empty, err := newLogSyncer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer empty.close()
	if err := empty.sync(true); err != nil {
		t.Fatalf("sync with no logs yet: %v", err)
	}
}
