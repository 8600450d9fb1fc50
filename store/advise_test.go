package store

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

func TestLogMappings(t *testing.T) {
	maps := `00400000-00c00000 r-xp 00000000 fe:00 123                              /usr/bin/tally
7efea0000000-7efea8000000 rw-s 00000000 fe:00 9994377                    /data/n 1/00002.mem
7efeb8000000-7efec0000000 rw-s 00000000 fe:00 9994414                    /data/n 1/000001.vlog
7efed4800000-7efed7e01000 rw-s 00000000 fe:00 9994378                    /data/n 1/000001.sst
7efe00000000-7efe08000000 rw-s 00000000 fe:00 9994300                    /data/n 1/00001.mem (deleted)
7efe10000000-7efe18000000 rw-p 00000000 fe:00 9994301                    /data/n 1/00003.mem
7efe20000000-7efe28000000 rw-s 00000000 fe:00 9994302                    /data/other/00004.mem
7efe30000000-7efe38000000 rw-s 00000000 fe:00 9994303                    /data/n 1/sub/00005.mem
7ffd1000-7ffd2000 rw-p 00000000 00:00 0                                  [stack]
zzzz-7efe48000000 rw-s 00000000 fe:00 9994304                    /data/n 1/00006.mem
7efe50000000-7efe48000000 rw-s 00000000 fe:00 9994305                    /data/n 1/00007.mem
garbage /data/n 1/00008.mem
`
	got := logMappings([]byte(maps), "/data/n 1")
	want := []logMapping{
		{start: 0x7efea0000000, end: 0x7efea8000000, inode: 9994377},
		{start: 0x7efeb8000000, end: 0x7efec0000000, inode: 9994414},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("logMappings = %+v, want %+v (the .mem and .vlog shared maps of the directory, nothing else)", got, want)
	}
}

// TestStoreAdvisesBadgerLogs checks that a store on disk leaves the memory
// maps of Badger's logs marked MADV_RANDOM ("rr" in /proc/self/smaps), from
// Open on and after writes that rotated the memtable, for a store opened
// through a symbolic link (the maps name the file the link leads to).
func TestStoreAdvisesBadgerLogs(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("MADV_RANDOM and /proc/self/smaps are Linux's; the advisor does nothing elsewhere")
	}
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "data")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	o := DefaultOptions(link)
	o.MemTableBytes = 1 << 20
	s, err := Open(o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	// A look after every write, so that the newest memtable's log has been
	// looked at when the writes end, wherever the last rotation fell.
	s.advisor.every = 1
	// 4 MiB of keys and small values: memtables of 1 MiB rotate.
	val := make([]byte, 200)
	for i := range 1 << 10 {
		muts := make([]Mutation, 16)
		for j := range muts {
			muts[j] = Mutation{Key: []byte{prefixMeta, 'x', byte(i >> 8), byte(i), byte(j)}, Value: val}
		}
		if err := s.write(muts); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	flags := logMapFlags(t, dir)
	rotated := false
	for path := range flags {
		rotated = rotated || strings.HasSuffix(path, ".mem") && filepath.Base(path) != "00001.mem"
	}
	if !rotated {
		t.Fatalf("maps of Badger logs of %s after 4 MiB of writes: %v; want a memtable after the first", dir, flags)
	}
	for path, f := range flags {
		if !slices.Contains(f, "rr") {
			t.Errorf("map of %s has VmFlags %v: want rr (MADV_RANDOM)", path, f)
		}
	}
}

// logMapFlags returns the VmFlags of each map of a .mem or .vlog file of
// dir in /proc/self/smaps.
func logMapFlags(t *testing.T, dir string) map[string][]string {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatalf("open smaps: %v", err)
	}
	defer f.Close()
	out := map[string][]string{}
	cur := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if len(logMappings([]byte(line), dir)) == 1 { // a map's first line
			cur = line[strings.IndexByte(line, '/'):]
			continue
		}
		if rest, ok := strings.CutPrefix(line, "VmFlags:"); ok { // its last
			if cur != "" {
				out[cur] = strings.Fields(rest)
			}
			cur = ""
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read smaps: %v", err)
	}
	return out
}

// BenchmarkLogAdvise: one look at the maps (read /proc/self/maps, find the
// logs, mark none new), as the write path makes every adviseEvery bytes.
func BenchmarkLogAdvise(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("the advisor does nothing off Linux")
	}
	s, err := Open(DefaultOptions(b.TempDir()))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for b.Loop() {
		if s.advisor.advise() == 0 {
			b.Fatal("no map of a Badger log")
		}
	}
}
