package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// valueThreshold is the size from which Badger stores a value in its value
// log instead of the LSM tree (Open sets it; on disk only).
const valueThreshold = 1 << 10

// logSyncer makes what the store wrote durable: it fdatasyncs Badger's
// write-ahead logs itself instead of letting Badger msync them.
//
// With SyncWrites, Badger msyncs both the memtable's log and the value log
// after every write, the value log even when the write put nothing in it,
// and on ext4 that idle sync still costs a device cache flush (strace of a
// single-view load: msync 181 µs mean for the memtable log, 91 µs for the
// idle value log; the write and sync of a group commit took 640–710 µs
// without the second, 690–732 µs with it). The store opens Badger without
// SyncWrites and, after each write, syncs the memtable log the write went
// to, and the value log only when the write had a value of valueThreshold
// bytes or more.
//
// A write may fill the memtable (or value log file) and go on in the next
// one, which Badger names with the next file number. So each log is
// followed from the file it synced last: while the next file exists, the
// current one is synced (its tail is in it) and closed, and the next one
// becomes current. Writes that no sync followed (the sweep's deletions) may
// have gone through several files, and Badger may have removed some
// already (a flushed memtable; a value log file its GC emptied): when the
// current file is gone and the next one too, every later file is synced,
// oldest first. Not safe for concurrent use: the committer, and callers
// of Store.Sync that hold no committer, use it one at a time (Store.syncMu).
type logSyncer struct {
	mem, vlog logTail
}

// logTail follows one of Badger's log kinds in dir: files named by format
// (fmt verb for the file number), the newest first found at open.
type logTail struct {
	dir    string
	format string
	fid    int
	f      *os.File // nil until the file of fid exists
}

// newLogSyncer follows the newest memtable log and value log in dir, the
// ones Badger writes to after Open. It first syncs every log file there:
// what Badger did to them while it opened (the value log it wrote last is
// cut to its last entry) is on disk before anything else is written.
func newLogSyncer(dir string) (*logSyncer, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list badger logs: %w", err)
	}
	s := &logSyncer{
		mem:  logTail{dir: dir, format: "%05d.mem"},
		vlog: logTail{dir: dir, format: "%06d.vlog"},
	}
	for _, e := range entries {
		for _, t := range []*logTail{&s.mem, &s.vlog} {
			fid, ok := t.fidOf(e.Name())
			if !ok {
				continue
			}
			t.fid = max(t.fid, fid)
			if err := syncPath(filepath.Join(dir, e.Name())); err != nil {
				return nil, err
			}
		}
	}
	for _, t := range []*logTail{&s.mem, &s.vlog} {
		if err := t.open(); err != nil {
			s.close()
			return nil, err
		}
	}
	return s, nil
}

// sync makes every write so far durable in the memtable logs, and in the
// value log too if vlog (a write had a value of valueThreshold bytes or
// more, or the caller cannot tell).
func (s *logSyncer) sync(vlog bool) error {
	if err := s.mem.sync(); err != nil {
		return err
	}
	if vlog {
		return s.vlog.sync()
	}
	return nil
}

// syncPath fdatasyncs the file at path. A file that is gone is no error:
// Badger removes the logs it replayed at open once their memtables are
// flushed, which may be between the listing and the sync.
func syncPath(path string) error {
	f, err := os.Open(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("open badger log: %w", err)
	}
	defer f.Close()
	if err := fdatasync(f); err != nil {
		return fmt.Errorf("fdatasync %s: %w", path, err)
	}
	return nil
}

func (s *logSyncer) close() {
	s.mem.close()
	s.vlog.close()
}

func (t *logTail) path(fid int) string { return filepath.Join(t.dir, fmt.Sprintf(t.format, fid)) }

// open opens the file of t.fid, if it exists.
func (t *logTail) open() error {
	f, err := os.Open(t.path(t.fid))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("open badger log: %w", err)
	}
	t.f = f
	return nil
}

// sync syncs the current file, and the ones after it that Badger has made
// since, moving to the newest.
func (t *logTail) sync() error {
	for {
		next, err := t.following()
		if err != nil {
			return err
		}
		if err := t.syncFile(); err != nil || next == 0 {
			return err
		}
		t.close()
		t.fid = next
		if err := t.open(); err != nil {
			return err
		}
	}
}

// following returns the number of the file Badger went on in after t's,
// or 0 if t's is the newest.
func (t *logTail) following() (int, error) {
	if ok, err := t.exists(t.fid + 1); err != nil || ok {
		return t.fid + 1, err
	}
	// t's is the newest, unless Badger removed it and the next, and went on
	// in later ones (memtables are flushed oldest first: a file that is
	// still there has no removed file after it).
	if ok, err := t.exists(t.fid); err != nil || ok {
		return 0, err
	}
	later, err := t.later()
	if err != nil || len(later) == 0 {
		return 0, err
	}
	return later[0], nil
}

func (t *logTail) exists(fid int) (bool, error) {
	_, err := os.Stat(t.path(fid))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("look for badger log: %w", err)
	}
	return true, nil
}

// later returns the numbers of t's files after t.fid, in order.
func (t *logTail) later() ([]int, error) {
	entries, err := os.ReadDir(t.dir)
	if err != nil {
		return nil, fmt.Errorf("list badger logs: %w", err)
	}
	var fids []int
	for _, e := range entries {
		if fid, ok := t.fidOf(e.Name()); ok && fid > t.fid {
			fids = append(fids, fid)
		}
	}
	slices.Sort(fids)
	return fids, nil
}

// fidOf is the file number of name if it is one of t's files.
func (t *logTail) fidOf(name string) (int, bool) {
	ext := filepath.Ext(t.format)
	fid, err := strconv.Atoi(strings.TrimSuffix(name, ext))
	return fid, err == nil && strings.HasSuffix(name, ext)
}

func (t *logTail) syncFile() error {
	if t.f == nil {
		if err := t.open(); err != nil || t.f == nil {
			return err
		}
	}
	if err := fdatasync(t.f); err != nil {
		return fmt.Errorf("fdatasync %s: %w", t.f.Name(), err)
	}
	return nil
}

func (t *logTail) close() {
	if t.f != nil {
		t.f.Close()
		t.f = nil
	}
}
