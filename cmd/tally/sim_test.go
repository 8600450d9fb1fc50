package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunSimExitCodes(t *testing.T) {
	failing := filepath.Join(t.TempDir(), "fail.txt")
	script := "regions us eu\n----\n\nexpect count v1 = 5\n----\n"
	if err := os.WriteFile(failing, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	short := []string{"--duration", "3s", "--views", "60", "--converge-within", "20s"}
	for _, tc := range []struct {
		name  string
		args  []string
		code  int
		first string // prefix of stdout's first line
		last  string // stdout's last line
	}{
		{"help", []string{"-h"}, 0, "", ""},
		{"bad flag", []string{"--nope"}, 2, "", ""},
		{"bad params", []string{"--regions", "0"}, 2, "", ""},
		{"one seed", append([]string{"--seed", "3"}, short...), 0, "tally sim seed=3 swarm=false regions=3", "PASSED"},
		{"seeds", append([]string{"--seeds", "3", "--swarm"}, short...), 0, "tally sim seeds=1..3 seed=1 swarm=true", "PASSED"},
		{"failing script", []string{"--script", failing}, 1, "regions us eu", "ERROR: us-1 has 0 views of v1, want 5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"sim"}, tc.args...), &stdout, &stderr)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, stdout.String(), stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
			if tc.first != "" && !strings.HasPrefix(lines[0], tc.first) {
				t.Errorf("first line %q, want prefix %q", lines[0], tc.first)
			}
			if tc.last != "" && lines[len(lines)-1] != tc.last {
				t.Errorf("last line %q, want %q", lines[len(lines)-1], tc.last)
			}
		})
	}
}
