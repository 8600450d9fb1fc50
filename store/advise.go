package store

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Badger writes its logs, the write-ahead log of each memtable (NNNNN.mem)
// and the value log (NNNNNN.vlog), by copying into a shared memory map of
// the file, and with SyncWrites it msyncs the map after every write. The
// kernel writes back the dirty part of the map at the granularity of its
// page-cache folios. Those are made by the readahead that page faults on
// the map set off, and on kernels whose page cache holds large folios for
// ext4 and XFS (Linux 6.x) that readahead makes them larger and larger as
// the writes go on through the file, up to 2 MiB. A commit that appended
// one kilobyte then wrote the whole 2 MiB folio it fell in: over a 45 s
// run of single views on one memtable, the device writes of tally serve
// rose from 4 MB/s to 1.2 GB/s at the same 600 commits a second, and the
// fsyncs that every answer waits for grew with them (issue 9).
//
// The logAdvisor marks each such map MADV_RANDOM: page faults on it then
// read no more than the page they need, folios stay one page, and a commit
// writes the pages it changed (the same run: 3 to 5 MB/s throughout). A
// memtable rotation maps a new file, so the advisor looks again at the
// process's maps every adviseEvery bytes written, from the write path,
// instead of on a timer.
type logAdvisor struct {
	dir     string // absolute; "" turns the advisor off (in-memory stores)
	log     *slog.Logger
	every   int64        // adviseEvery (tests look more often)
	pending atomic.Int64 // bytes written since the last look

	mu     sync.Mutex
	done   map[logMapping]bool // maps advised already, as of the last look
	warned bool                // an error was logged: log no more
}

// adviseEvery is how many bytes of writes go by between two looks at the
// maps. A look takes ~46 µs (BenchmarkLogAdvise): once a second for single
// views, 25 times a second for batches at 250,000 views/s. A new log is
// advised after its first MiB at the latest, when its folios are still
// small: unadvised, the run above wrote 4 MB/s over its first 6 s, ~10 MB
// into its memtable's log.
const adviseEvery = 1 << 20

// logMapping is one shared memory map of one of Badger's log files.
type logMapping struct {
	start, end uint64 // addresses, end exclusive
	inode      uint64
}

// newLogAdvisor makes the advisor of the Badger opened in dir, and marks
// the maps of its logs. An open Badger on disk always maps its memtable's
// log: finding none is logged (the advisor would be doing nothing).
func newLogAdvisor(dir string, inMemory bool, log *slog.Logger) (*logAdvisor, error) {
	a := &logAdvisor{log: log, every: adviseEvery, done: make(map[logMapping]bool)}
	if inMemory || !adviseSupported {
		return a, nil
	}
	// The path the kernel shows in /proc/self/maps: absolute, with every
	// symbolic link followed.
	abs, err := filepath.Abs(dir)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		return nil, fmt.Errorf("path of %q in the memory maps: %w", dir, err)
	}
	a.dir = abs
	if a.advise() == 0 {
		a.warn("find the memtable's log in /proc/self/maps under "+abs, errors.New("no map of a *.mem or *.vlog file there"))
	}
	return a, nil
}

// wrote counts n bytes written and looks at the maps once a.every bytes
// have gone by since the last look.
func (a *logAdvisor) wrote(n int) {
	if a.dir == "" || a.pending.Add(int64(n)) < a.every {
		return
	}
	a.pending.Store(0)
	a.advise()
}

// advise marks every map of a log file in a.dir not marked yet, and
// reports how many maps of log files there are. A failure costs write
// amplification, not correctness: it is logged once.
func (a *logAdvisor) advise() int {
	if a.dir == "" {
		return 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		a.warn("read /proc/self/maps", err)
		return 0
	}
	seen := make(map[logMapping]bool, len(a.done))
	for _, m := range logMappings(maps, a.dir) {
		seen[m] = true
		if a.done[m] {
			continue
		}
		if err := madviseRandom(m.start, m.end-m.start); err != nil {
			a.warn(fmt.Sprintf("madvise %#x-%#x random", m.start, m.end), err)
		}
	}
	a.done = seen // maps gone (a flushed memtable's) are forgotten
	return len(seen)
}

func (a *logAdvisor) warn(what string, err error) {
	if a.warned || a.log == nil {
		return
	}
	a.warned = true
	a.log.Warn("badger logs stay on readahead: commits may write back more than they changed", "step", what, "err", err)
}

// logMappings returns the maps in maps (the text of /proc/[pid]/maps) of
// files in dir named *.mem or *.vlog. Lines it cannot read are skipped.
func logMappings(maps []byte, dir string) []logMapping {
	var out []logMapping
	for len(maps) > 0 {
		var line []byte
		line, maps, _ = bytes.Cut(maps, []byte("\n"))
		// address perms offset dev inode path; the path is the rest of the
		// line from its first '/' (the other fields have none).
		slash := bytes.IndexByte(line, '/')
		if slash < 0 {
			continue
		}
		path := string(line[slash:])
		if filepath.Dir(path) != dir {
			continue
		}
		if ext := filepath.Ext(path); ext != ".mem" && ext != ".vlog" {
			continue // also " (deleted)": unlinked, about to be unmapped
		}
		f := strings.Fields(string(line[:slash]))
		if len(f) != 5 {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		inode, err3 := strconv.ParseUint(f[4], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || end <= start || !strings.HasSuffix(f[1], "s") {
			continue // shared maps only: Badger's writable ones
		}
		out = append(out, logMapping{start: start, end: end, inode: inode})
	}
	return out
}
