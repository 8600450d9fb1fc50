package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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
// and on ext4 that idle sync still costs a device cache flush: a third of
// the time of every group commit (strace of a single-view load: 181 µs
// mean for the memtable log, 91 µs for the idle value log). The store opens
// Badger without SyncWrites and, after each write, syncs the memtable log
// the write went to, and the value log only when the write had a value of
// valueThreshold bytes or more.
//
// A write may fill the memtable (or value log file) and go on in the next
// one, which Badger names with the next file number. So each log is
// followed from the file it synced last: while the next file exists, the
// current one is synced (its tail is in it) and closed, and the next one
// becomes current. Not safe for concurrent use: the committer, and callers
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
// ones Badger writes to after Open.
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
		name := e.Name()
		for _, t := range []*logTail{&s.mem, &s.vlog} {
			ext := filepath.Ext(t.format)
			fid, err := strconv.Atoi(strings.TrimSuffix(name, ext))
			if strings.HasSuffix(name, ext) && err == nil && fid > t.fid {
				t.fid = fid
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
		_, err := os.Stat(t.path(t.fid + 1))
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if err != nil {
			return fmt.Errorf("look for the next badger log: %w", err)
		}
		if err := t.syncFile(); err != nil {
			return err
		}
		t.close()
		t.fid++
		if err := t.open(); err != nil {
			return err
		}
	}
	return t.syncFile()
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
