package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// autoMemoryShare is the share of the machine's (or the cgroup's) memory
// that --memory-limit=auto gives the Go runtime: the rest is for Badger's
// own allocations, the page cache and the rest of the machine.
const autoMemoryShare = 0.8

// memoryLimit resolves --memory-limit to the soft limit in bytes for
// debug.SetMemoryLimit, and what it came from; 0 means no limit of tally's
// own. "auto" is autoMemoryShare of the memory available (the smaller of
// the machine's and the cgroup's), unless GOMEMLIMIT is set, which the
// runtime applies itself; "off" sets none; anything else is a size: bytes,
// or a number with KiB, MiB, GiB or TiB.
func memoryLimit(flag string, getenv func(string) string, readFile func(string) ([]byte, error)) (int64, string, error) {
	switch flag {
	case "off":
		return 0, "off", nil
	case "auto":
		if getenv("GOMEMLIMIT") != "" {
			return 0, "GOMEMLIMIT", nil
		}
		avail, from := availableMemory(readFile)
		if avail <= 0 {
			return 0, "unknown memory size", nil
		}
		return int64(float64(avail) * autoMemoryShare), fmt.Sprintf("%.0f%% of %s", 100*autoMemoryShare, from), nil
	}
	n, err := parseSize(flag)
	if err != nil || n <= 0 {
		return 0, "", fmt.Errorf("--memory-limit %q: want auto, off, or a size such as 20GiB", flag)
	}
	return n, "--memory-limit", nil
}

// parseSize parses bytes, or a number with a binary unit suffix.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	for i, unit := range []string{"KiB", "MiB", "GiB", "TiB"} {
		if num, ok := strings.CutSuffix(s, unit); ok {
			s, mult = num, int64(1)<<(10*(i+1))
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, err
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("size %d×%d overflows", n, mult)
	}
	return n * mult, nil
}

// availableMemory is the smaller of the machine's memory (/proc/meminfo)
// and the cgroup's limit (v2 memory.max, or v1 limit_in_bytes), in bytes,
// and which it was; 0 if neither can be read.
func availableMemory(readFile func(string) ([]byte, error)) (int64, string) {
	var total int64
	from := ""
	if b, err := readFile("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 3 && f[0] == "MemTotal:" && f[2] == "kB" {
				if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil && kb > 0 {
					total, from = kb<<10, "the machine's memory"
				}
			}
		}
	}
	for _, path := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := readFile(path)
		if err != nil {
			continue
		}
		limit, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || limit <= 0 { // "max": no limit
			continue
		}
		if total == 0 || limit < total {
			total, from = limit, "the cgroup's memory limit"
		}
	}
	return total, from
}

// applyMemoryLimit sets the Go runtime's soft memory limit from
// --memory-limit and says what it did.
func applyMemoryLimit(flag string, getenv func(string) string) (string, error) {
	n, from, err := memoryLimit(flag, getenv, os.ReadFile)
	if err != nil {
		return "", err
	}
	if n == 0 {
		return "no limit of tally's own (" + from + ")", nil
	}
	debug.SetMemoryLimit(n)
	return fmt.Sprintf("%d MiB (%s)", n>>20, from), nil
}
