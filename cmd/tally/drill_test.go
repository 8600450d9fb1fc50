package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDrillShort runs `tally drill --profile short` against real tally serve
// processes: a kill -9 of the client's nearest region, a partition with
// writers inside every region (network namespaces; when not root the drill
// is skipped and the report says why), and a rolling restart, all under
// load through httpapi/client. Every acknowledged view must be counted
// exactly once on every node: no view lost, none doubled.
func TestDrillShort(t *testing.T) {
	if testing.Short() {
		t.Skip("short mode: the failover drill runs a cluster for about a minute")
	}
	p := drillProfiles["short"]
	now := time.Now().UTC()
	if left := now.Truncate(24 * time.Hour).Add(24 * time.Hour).Sub(now); left < p.MaxRun {
		t.Skipf("%s to UTC midnight: the drill would straddle a dedup window", left.Round(time.Second))
	}
	bin := buildTally(t)
	ctx := context.Background()
	if dl, ok := t.Deadline(); ok {
		// Leave time to stop the nodes and remove the namespaces before the
		// test binary's own deadline kills everything.
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-time.Minute))
		defer cancel()
	}
	var progress lockedBuffer
	rep, err := runDrills(ctx, drillOptions{Profile: p, Bin: bin, Dir: t.TempDir(), Network: "auto", Drills: allDrills, Seed: 1}, &progress)
	var out bytes.Buffer
	if rep != nil {
		rep.write(&out)
	}
	t.Logf("report:\n%s", out.String())
	if err != nil {
		t.Fatalf("drill: %v\nprogress:\n%s", err, progress.String())
	}
	netnsOK, why := netnsSupported()
	if len(rep.Results) != len(allDrills) {
		t.Fatalf("%d drill results, want %d", len(rep.Results), len(allDrills))
	}
	for _, res := range rep.Results {
		if res.Skipped != "" {
			if res.Name != drillCut || netnsOK {
				t.Errorf("%s skipped: %s", res.Name, res.Skipped)
			} else {
				t.Logf("%s skipped as expected without network namespaces (%s): %s", res.Name, why, res.Skipped)
			}
			continue
		}
		if res.Err != nil {
			t.Errorf("%s: %v", res.Name, res.Err)
		}
		if res.Lost != 0 {
			t.Errorf("%s: %d acknowledged views lost", res.Name, res.Lost)
		}
		if res.Doubled != 0 {
			// Counting a failed-over view once in every region needs the
			// replicated dedup claims (issue 5).
			t.Errorf("%s: %d views counted more than once", res.Name, res.Doubled)
		}
		if !res.Converged || res.Unsettled != 0 || len(res.Problems) > 0 {
			t.Errorf("%s: converged %v, unsettled %d, problems %q", res.Name, res.Converged, res.Unsettled, res.Problems)
		}
		if res.Views == 0 || res.Requests == 0 {
			t.Errorf("%s: no load: %d views, %d requests", res.Name, res.Views, res.Requests)
		}
	}
	if a := rep.Audit; !rep.Audited || a.Lost != 0 || a.Doubled != 0 || !(a.Exact || a.Agreed) {
		t.Errorf("final audit: %+v", a)
	}
	if t.Failed() {
		t.Logf("progress:\n%s", progress.String())
		logNodeTail(t, rep.Dir)
	}
}

// logNodeTail logs the warnings and errors of a failed drill's nodes and
// the last lines they wrote: the test's folder, which holds their log, is
// gone once the test ends.
func logNodeTail(t *testing.T, dir string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "nodes.log"))
	if err != nil {
		t.Logf("node log: %v", err)
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	var warn []string
	for _, l := range lines {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			warn = append(warn, l)
		}
	}
	const most = 200
	t.Logf("node log: %d lines, %d warnings and errors (the last %d):\n%s", len(lines), len(warn), min(len(warn), most), strings.Join(warn[max(0, len(warn)-most):], "\n"))
	t.Logf("node log, the last %d lines:\n%s", min(len(lines), most), strings.Join(lines[max(0, len(lines)-most):], "\n"))
}

func TestRunDrillFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"-h"}, 0},
		{[]string{"--profile", "huge"}, 2},
		{[]string{"--drills", "kill-region,meteor"}, 2},
		{[]string{"--network", "carrier-pigeon"}, 2},
		{[]string{"extra"}, 2},
		{[]string{"writer"}, 2}, // the helper wants its flags
	} {
		var stdout, stderr bytes.Buffer
		if code := runDrill(context.Background(), tc.args, &stdout, &stderr); code != tc.code {
			t.Errorf("tally drill %q: exit %d, want %d\n%s", tc.args, code, tc.code, stderr.String())
		}
	}
}

func TestLedgerLag(t *testing.T) {
	l := newLedger()
	t0 := time.Unix(1000, 0)
	for i, d := range []time.Duration{3, 1, 2} { // acknowledged out of order
		k := viewKey{"v", fmt.Sprint(i)}
		l.sent(k)
		l.ack(k, t0.Add(d*time.Second))
	}
	l.ack(viewKey{"v", "0"}, t0.Add(9*time.Second)) // a later duplicate ack changes nothing
	l.sent(viewKey{"v", "3"})                       // sent, never acknowledged
	if got := l.expected("v"); got != 4 {
		t.Fatalf("expected %d, want 4", got)
	}
	if u := l.unacked([]string{"v", "w"}); len(u) != 1 || u[0].user != "3" {
		t.Fatalf("unacked %v", u)
	}
	for _, tc := range []struct {
		count uint64
		at    time.Duration
		want  time.Duration
	}{
		{0, 0, 0}, // nothing acknowledged yet
		{0, 1500 * time.Millisecond, 500 * time.Millisecond}, // the first ack is 0.5s old
		{1, 1500 * time.Millisecond, 0},
		{1, 5 * time.Second, 3 * time.Second}, // shows 1 of 3: the second ack (t=2s) is missing
		{3, 5 * time.Second, 0},
		{4, 5 * time.Second, 0}, // more than acknowledged: not behind
	} {
		if got := l.lag("v", tc.count, t0.Add(tc.at)); got != tc.want {
			t.Errorf("lag(count %d at +%s) = %s, want %s", tc.count, tc.at, got, tc.want)
		}
	}
}

// fakeViews is a one-node view API with dedup: enough for the drill writer.
type fakeViews struct {
	mu     sync.Mutex
	seen   map[viewKey]bool
	counts map[string]uint64
}

func (f *fakeViews) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/healthz" {
		w.Write([]byte(`{"status":"ok"}`)) //nolint:errcheck // test
		return
	}
	video := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/videos/"), "/views")
	var in struct {
		UserID string `json:"userId"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || r.Method != http.MethodPost {
		http.Error(w, `{"error":{"code":"malformed_json","message":"no"}}`, http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	k := viewKey{video, in.UserID}
	counted := !f.seen[k]
	if counted {
		f.seen[k] = true
		f.counts[video]++
	}
	n := f.counts[video]
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if counted {
		fmt.Fprintf(w, `{"videoId":%q,"counted":true,"viewCount":%d}`, video, n)
	} else {
		fmt.Fprintf(w, `{"videoId":%q,"counted":false,"viewCount":%d,"reason":"duplicate"}`, video, n)
	}
}

// The writer that runs inside a region reports every pair it sends and
// every acknowledgement, stops when its stdin closes, and its report gives
// the drill the exact count of every video.
func TestDrillWriterReport(t *testing.T) {
	f := &fakeViews{seen: map[viewKey]bool{}, counts: map[string]uint64{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)

	stdinR, stdinW := io.Pipe()
	stdoutR, stdoutW := io.Pipe()
	var stderr lockedBuffer
	code := make(chan int, 1)
	go func() {
		code <- runDrillWriter(context.Background(), []string{
			"--region", "here=" + srv.URL, "--videos", "a,b,c", "--prefix", "t", "--conns", "3",
			"--rate", "2000", "--repeat", "0.2", "--max-duration", "1m",
		}, stdinR, stdoutW, &stderr)
		stdoutW.Close()
	}()
	led := newLedger()
	cw := &cutWriter{stats: newWriterStats()}
	lines := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdoutR)
		var first error
		for sc.Scan() {
			if err := cw.handle(sc.Text(), led); err != nil && first == nil {
				first = err
			}
		}
		lines <- first
	}()
	if !waitFor(context.Background(), 30*time.Second, func() bool { return cw.acks.Load() >= 200 }) {
		t.Fatalf("only %d acknowledgements in 30s; stderr: %s", cw.acks.Load(), stderr.String())
	}
	stdinW.Close() // stop
	if c := <-code; c != 0 {
		t.Fatalf("writer exit %d: %s", c, stderr.String())
	}
	if err := <-lines; err != nil {
		t.Fatal(err)
	}
	if u := led.unacked([]string{"a", "b", "c"}); len(u) != 0 || cw.left.Load() != 0 {
		t.Fatalf("unacknowledged after the writer settled: %v (left %d)", u, cw.left.Load())
	}
	for _, v := range []string{"a", "b", "c"} {
		if got, want := f.counts[v], led.expected(v); got != want || want == 0 {
			t.Errorf("video %s: server counted %d, the report says %d pairs", v, got, want)
		}
	}
	st := cw.stats
	if st.calls == 0 || st.ok != st.calls || st.repeats == 0 || st.repeatsCounted != 0 || st.answeredBy["here"] != st.ok || cw.attempts != uint64(st.calls) {
		t.Errorf("stats: calls %d ok %d repeats %d counted again %d answered %v attempts %d",
			st.calls, st.ok, st.repeats, st.repeatsCounted, st.answeredBy, cw.attempts)
	}
}
