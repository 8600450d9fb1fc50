package main

import (
	"errors"
	"io/fs"
	"testing"
)

// TestMemoryLimit: --memory-limit auto takes 80% of the smaller of the
// machine's and the cgroup's memory, defers to GOMEMLIMIT, and sizes parse
// with binary units; bad values are refused.
func TestMemoryLimit(t *testing.T) {
	files := func(m map[string]string) func(string) ([]byte, error) {
		return func(p string) ([]byte, error) {
			if s, ok := m[p]; ok {
				return []byte(s), nil
			}
			return nil, fs.ErrNotExist
		}
	}
	noEnv := func(string) string { return "" }
	meminfo := "MemTotal:       25165824 kB\nMemFree:        1000 kB\n" // 24 GiB
	cases := []struct {
		name, flag string
		env        func(string) string
		files      map[string]string
		want       int64
	}{
		{"machine", "auto", noEnv, map[string]string{"/proc/meminfo": meminfo}, 24 << 30 * 8 / 10},
		{"cgroup v2 smaller", "auto", noEnv, map[string]string{"/proc/meminfo": meminfo, "/sys/fs/cgroup/memory.max": "4294967296\n"}, 4 << 30 * 8 / 10},
		{"cgroup v2 unlimited", "auto", noEnv, map[string]string{"/proc/meminfo": meminfo, "/sys/fs/cgroup/memory.max": "max\n"}, 24 << 30 * 8 / 10},
		{"cgroup v1", "auto", noEnv, map[string]string{"/proc/meminfo": meminfo, "/sys/fs/cgroup/memory/memory.limit_in_bytes": "2147483648"}, 2 << 30 * 8 / 10},
		{"GOMEMLIMIT", "auto", func(k string) string {
			if k == "GOMEMLIMIT" {
				return "1GiB"
			}
			return ""
		}, map[string]string{"/proc/meminfo": meminfo}, 0},
		{"unknown", "auto", noEnv, nil, 0},
		{"off", "off", noEnv, map[string]string{"/proc/meminfo": meminfo}, 0},
		{"GiB", "20GiB", noEnv, nil, 20 << 30},
		{"bytes", "1048576", noEnv, nil, 1 << 20},
	}
	for _, c := range cases {
		got, from, err := memoryLimit(c.flag, c.env, files(c.files))
		if err != nil || got != c.want {
			t.Errorf("%s: %d (%s), %v; want %d", c.name, got, from, err, c.want)
		}
	}
	for _, bad := range []string{"", "lots", "-1GiB", "0", "20GB", "9999999999TiB"} {
		if _, _, err := memoryLimit(bad, noEnv, files(nil)); err == nil {
			t.Errorf("--memory-limit %q accepted", bad)
		}
	}
	if _, err := applyMemoryLimit("nope", noEnv); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("applyMemoryLimit of a bad value: %v", err)
	}
}
