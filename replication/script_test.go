package replication

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tallyhq/tally/crdt"
)

var update = flag.Bool("update", false, "rewrite testdata/*.txt with the actual output")

// TestScripts runs the scenario scripts in testdata/*.txt: blocks of a
// command, a "----" line and its expected output, ended by a blank line.
// With -update the files are rewritten with what the commands print now.
//
//	cluster n=3 seed=1 drop=0.1 dup=0.05 delay=5ms-120ms logcap=8 batch=16
//	incr a v1 [n]        count n views of v1 at node a
//	tick n               let n steps of 50ms pass
//	partition a b | heal | crash a | restart a [wipe]
//	settle               run until converged and every cursor is at its head
//	converge             run until converged (cursors may lag: a link may be cut)
//	values v1            every node's count of v1
//	status a             a's view of each peer
//	traffic              messages and entries sent since the last traffic
func TestScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			got := runScript(t, string(want))
			if *update {
				if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got != string(want) {
				t.Errorf("%s: output differs (go test -run TestScripts -update to accept):\n%s", file, firstDiff(string(want), got))
			}
		})
	}
}

func firstDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := range max(len(wl), len(gl)) {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return fmt.Sprintf("line %d:\nwant %q\ngot  %q", i+1, w, g)
		}
	}
	return ""
}

// runScript executes the script's commands, ignoring its recorded outputs,
// and returns the script with the actual outputs.
func runScript(t *testing.T, script string) string {
	var out strings.Builder
	var c *cluster
	sc := bufio.NewScanner(strings.NewReader(script))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			out.WriteString(line + "\n")
			continue
		}
		out.WriteString(line + "\n----\n")
		for sc.Scan() && sc.Text() != "----" { // skip to the separator
		}
		for sc.Scan() && sc.Text() != "" { // and past the old output
		}
		for _, l := range c.do(t, &c, strings.Fields(line)) {
			out.WriteString(l + "\n")
		}
		out.WriteString("\n")
	}
	return strings.TrimRight(out.String(), "\n") + "\n"
}

func (c *cluster) node(t *testing.T, name string) int {
	for i, nd := range c.nodes {
		if string(nd.id) == name {
			return i
		}
	}
	t.Fatalf("no node %q", name)
	return 0
}

// do runs one command; cp is set by "cluster".
func (c *cluster) do(t *testing.T, cp **cluster, args []string) []string {
	if args[0] != "cluster" && c == nil {
		t.Fatalf("%s before cluster", args[0])
	}
	arg := func(i int) string {
		if i >= len(args) {
			t.Fatalf("%s: missing argument %d", args[0], i)
		}
		return args[i]
	}
	num := func(s string) int {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("%s: %v", args[0], err)
		}
		return n
	}
	switch args[0] {
	case "cluster":
		n, seed, cfg, net := 3, uint64(1), testConfig(), netConfig{minDelay: 5 * time.Millisecond, maxDelay: 50 * time.Millisecond}
		for _, kv := range args[1:] {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "n":
				n = num(v)
			case "seed":
				seed = uint64(num(v))
			case "drop", "dup":
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatal(err)
				}
				if k == "drop" {
					net.drop = f
				} else {
					net.dup = f
				}
			case "delay":
				lo, hi, _ := strings.Cut(v, "-")
				var err1, err2 error
				net.minDelay, err1 = time.ParseDuration(lo)
				net.maxDelay, err2 = time.ParseDuration(hi)
				if err1 != nil || err2 != nil {
					t.Fatalf("delay %q", v)
				}
			case "logcap":
				cfg.LogCapacity = num(v)
			case "batch":
				cfg.MaxBatchKeys = num(v)
			default:
				t.Fatalf("cluster: unknown %q", k)
			}
		}
		*cp = newCluster(t, seed, n, cfg, net)
		(*cp).capture = true
		return nil
	case "incr":
		n := 1
		if len(args) > 3 {
			n = num(args[3])
		}
		c.incr(c.node(t, arg(1)), crdt.Key{Video: arg(2), Event: "view"}, uint64(n))
	case "tick":
		c.run(time.Duration(num(arg(1))) * step)
	case "partition":
		c.partition(c.node(t, arg(1)), c.node(t, arg(2)))
	case "heal":
		c.heal()
	case "crash":
		c.nodes[c.node(t, arg(1))].up = false
	case "restart":
		c.restart(c.node(t, arg(1)), len(args) > 2 && args[2] == "wipe")
	case "settle":
		return []string{fmt.Sprintf("converged and caught up in %v", c.settle(step, 5*time.Minute))}
	case "converge":
		return []string{fmt.Sprintf("converged in %v", c.settleWhen(step, 5*time.Minute, c.converged))}
	case "values":
		var parts []string
		for _, nd := range c.nodes {
			parts = append(parts, fmt.Sprintf("%s=%d", nd.id, nd.states[crdt.Key{Video: arg(1), Event: "view"}].Value()))
		}
		return []string{strings.Join(parts, " ")}
	case "status":
		st := c.nodes[c.node(t, arg(1))].eng.Status(c.now)
		out := []string{fmt.Sprintf("head=%d log-start=%d log-keys=%d keys=%d", st.Head, st.LogStart, st.LogKeys, st.Keys)}
		for _, p := range st.Peers {
			lag := "unknown"
			if p.LagSeconds >= 0 {
				lag = fmt.Sprintf("%.2fs", p.LagSeconds)
			}
			out = append(out, fmt.Sprintf("→ %s cursor=%d behind=%d lag=%s repairs=%d", p.Peer, p.Cursor, p.Behind, lag, p.Repairs))
		}
		return out
	case "traffic":
		msgs, entries := map[Kind]int{}, 0
		for _, m := range c.captured {
			msgs[m.Kind]++
			entries += len(m.Entries)
		}
		c.captured = nil
		var parts []string
		for k := KindDelta; k <= KindRepairAck; k++ {
			parts = append(parts, fmt.Sprintf("%s=%d", k, msgs[k]))
		}
		return []string{strings.Join(parts, " "), fmt.Sprintf("entries=%d", entries)}
	default:
		t.Fatalf("unknown command %q", args[0])
	}
	return nil
}
