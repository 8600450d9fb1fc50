package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestBenchMetricSum(t *testing.T) {
	text := `# HELP tally_replication_bytes_sent_total Approximate encoded bytes produced for each peer.
# TYPE tally_replication_bytes_sent_total counter
tally_replication_bytes_sent_total{peer="ap-1",region="ap"} 1.5e+06
tally_replication_bytes_sent_total{peer="eu-1",region="eu"} 250
tally_replication_bytes_sent_total_extra{peer="ap-1"} 7
tally_replication_repairs_total{peer="ap-1",region="ap"} 2
tally_ready 1
`
	for _, c := range []struct {
		name  string
		match map[string]string
		want  float64
		ok    bool
	}{
		{"tally_replication_bytes_sent_total", map[string]string{"peer": "ap-1"}, 1.5e6, true},
		{"tally_replication_bytes_sent_total", nil, 1.5e6 + 250, true},
		{"tally_replication_bytes_sent_total", map[string]string{"peer": "ap-1", "region": "eu"}, 0, false},
		{"tally_replication_bytes_sent_total", map[string]string{"peer": "us-1"}, 0, false},
		{"tally_replication_repairs_total", map[string]string{"peer": "ap-1"}, 2, true},
		{"tally_ready", nil, 1, true},
		{"tally_missing", nil, 0, false},
	} {
		got, ok := benchMetricSum(text, c.name, c.match)
		if got != c.want || ok != c.ok {
			t.Errorf("benchMetricSum(%s, %v) = %v, %v; want %v, %v", c.name, c.match, got, ok, c.want, c.ok)
		}
	}
}

func TestBenchIngestBody(t *testing.T) {
	b := benchIngestBody(nil, "r1", 5, 8)
	var events []struct {
		VideoID string `json:"videoId"`
		UserID  string `json:"userId"`
	}
	if err := json.Unmarshal(b, &events); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if len(events) != 3 || events[0].VideoID != "rp-r1-5" || events[2].VideoID != "rp-r1-7" ||
		events[0].UserID != "ru-r1-5" || events[1].UserID != "ru-r1-6" {
		t.Errorf("events %+v", events)
	}
	if benchRepairVideo("r1", 7) != "rp-r1-7" {
		t.Errorf("video name %q", benchRepairVideo("r1", 7))
	}
	// The buffer is reused.
	b2 := benchIngestBody(b, "r1", 0, 1)
	if string(b2) != `[{"videoId":"rp-r1-0","userId":"ru-r1-0"}]` {
		t.Errorf("reused buffer: %s", b2)
	}
}

func TestBenchRepairConfigValidate(t *testing.T) {
	good := benchRepairConfig{Keys: 1000, Batch: 100, Conns: 2, Regions: 3, Sample: 10, Timeout: time.Minute, Stop: "kill"}
	if err := good.validate(); err != nil {
		t.Fatal(err)
	}
	for _, mod := range []func(*benchRepairConfig){
		func(c *benchRepairConfig) { c.Keys = 0 },
		func(c *benchRepairConfig) { c.Batch = 10_001 },
		func(c *benchRepairConfig) { c.Conns = 0 },
		func(c *benchRepairConfig) { c.Regions = 1 },
		func(c *benchRepairConfig) { c.Sample = 1001 },
		func(c *benchRepairConfig) { c.Timeout = 0 },
		func(c *benchRepairConfig) { c.Stop = "pause" },
	} {
		c := good
		mod(&c)
		if err := c.validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func TestBenchWaitIsBounded(t *testing.T) {
	calls := 0
	start := time.Now()
	err := benchWait(context.Background(), 50*time.Millisecond, 10*time.Millisecond, func() (bool, error) {
		calls++
		return false, fmt.Errorf("no")
	})
	if err == nil || !strings.Contains(err.Error(), "no") || time.Since(start) > 2*time.Second || calls < 2 {
		t.Errorf("err %v after %d calls in %v", err, calls, time.Since(start))
	}
	if err := benchWait(context.Background(), time.Minute, time.Millisecond, func() (bool, error) { return true, nil }); err != nil {
		t.Error(err)
	}
}

func TestBenchPostBatchRetries(t *testing.T) {
	var calls atomic.Int32
	var modeV atomic.Value
	modeV.Store("503-then-dup")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		mode := modeV.Load().(string)
		w.Header().Set("Content-Type", "application/json")
		switch {
		case mode == "503-then-dup" && n == 1:
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"error":{"code":"overloaded","message":"x"}}`)
		case mode == "503-then-dup":
			io.WriteString(w, `{"received":2,"counted":1,"notCounted":[{"index":0,"reason":"duplicate"}]}`)
		case mode == "rate":
			io.WriteString(w, `{"received":2,"counted":1,"notCounted":[{"index":0,"reason":"rate_limited"}]}`)
		default:
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":{"code":"malformed_json","message":"x"}}`)
		}
	}))
	defer srv.Close()
	cl := newBenchClient()
	counted, retries, err := benchPostBatch(context.Background(), cl, srv.URL, []byte("[]"), 2)
	if err != nil || counted != 1 || retries != 1 {
		t.Errorf("503 then duplicate: counted %d retries %d err %v", counted, retries, err)
	}
	modeV.Store("rate")
	if _, _, err := benchPostBatch(context.Background(), cl, srv.URL, []byte("[]"), 2); err == nil || !strings.Contains(err.Error(), "rate_limited") {
		t.Errorf("rate limited event: %v", err)
	}
	modeV.Store("bad")
	if _, _, err := benchPostBatch(context.Background(), cl, srv.URL, []byte("[]"), 2); err == nil || !strings.Contains(err.Error(), "HTTP 400") {
		t.Errorf("400: %v", err)
	}
}

func TestBenchFlags(t *testing.T) {
	var out, errb bytes.Buffer
	ctx := context.Background()
	if code := run(ctx, []string{"bench"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "tally bench visibility") {
		t.Errorf("bench without kind: %d %q", code, errb.String())
	}
	for _, args := range [][]string{
		{"bench", "nope"},
		{"bench", "visibility"},
		{"bench", "visibility", "--endpoints", "http://127.0.0.1:1"},
		{"bench", "visibility", "--endpoints", "http://127.0.0.1:1,http://127.0.0.1:2", "--warmup", "2h"},
		{"bench", "repair", "--keys", "0"},
		{"bench", "repair", "--stop", "pause"},
		{"bench", "repair", "extra"},
		{"bench", "compare", "--duration", "0s"},
		{"bench", "compare", "--duration", "3m"},
		{"bench", "compare", "--mixes", "hot"},
		{"bench", "compare", "--runs", "view,nope"},
		{"bench", "compare", "--batch", "10001"},
		{"bench", "compare", "--repeat", "1"},
		{"bench", "compare", "--quiet-wait", "-1s"},
		{"bench", "compare", "extra"},
		{"bench", "scale", "--keys", "0"},
		{"bench", "scale", "--keys", "10", "--sample", "11"},
		{"bench", "scale", "extra"},
		{"bench", "echo-server", "extra"},
	} {
		errb.Reset()
		if code := run(ctx, args, &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, want 2 (%s)", args, code, errb.String())
		}
	}
}

// TestBenchEndToEnd runs the benchmarks at a tiny size on real processes.
func TestBenchEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real tally serve processes")
	}
	bin := buildTally(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("repair", func(t *testing.T) {
		cmd := exec.CommandContext(ctx, bin, "bench", "repair", "--keys", "3000", "--batch", "1000",
			"--regions", "2", "--stop", "term", "--sample", "20", "--timeout", "1m", "--dir", filepath.Join(t.TempDir(), "r"))
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("tally bench repair: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errb.String())
		}
		line := lastLine(out.String(), "repair: ")
		// The node must repair 18,000 keys: per view (one per video), its
		// counter, its claim set, its minute, hour and day buckets and the
		// unique-viewer chunk it set (all replicate like counters).
		for _, want := range []string{"keys=3000 ", "target_keys=18000 ", "sample_ok=20/20 ", "repairs="} {
			if !strings.Contains(line, want) {
				t.Errorf("summary lacks %q: %s", want, line)
			}
		}
		if strings.Contains(line, "ready_to_keys=- ") || strings.Contains(line, "bytes_to_node=0 ") {
			t.Errorf("summary incomplete: %s", line)
		}
	})

	t.Run("compare", func(t *testing.T) {
		args := []string{"bench", "compare", "--duration", "300ms", "--conns", "4", "--batch-conns", "2", "--batch", "50", "--quiet-wait", "0",
			"--videos", "20", "--mixes", "half=0.5", "--dir", filepath.Join(t.TempDir(), "c")}
		systems := []string{"tally", "echo", "redis+lua"}
		if _, err := exec.LookPath("redis-server"); err != nil {
			t.Logf("redis-server not installed: comparing without it")
			args = append(args, "--redis-server", "")
			systems = systems[:2]
		}
		cmd := exec.CommandContext(ctx, bin, args...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("tally bench compare: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errb.String())
		}
		// A row per run and system (paced runs on tally and echo), none with an
		// error or an answer against the dedup rule (the run would fail),
		// and the ratios.
		rows := map[string]bool{}
		for _, line := range strings.Split(out.String(), "\n") {
			if f := strings.Fields(line); len(f) == 17 && f[0] == "half" && !strings.HasPrefix(line, " ") { // table rows start at the margin
				rows[f[1]+" "+f[2]] = true
				// srv-B/v: bytes per view, or "-" where /proc/PID/io is
				// not there to read (0 if TMPDIR keeps files in RAM).
				if n, err := strconv.ParseInt(f[13], 10, 64); f[13] != "-" && (err != nil || n < 0) {
					t.Errorf("srv-B/v of %s %s is %q, want bytes written per view:\n%s", f[1], f[2], f[13], out.String())
				}
			}
		}
		want := []string{"view@50% tally", "get@50% tally", "view@50% echo", "get@50% echo", "batch tally"}
		for _, sys := range systems {
			want = append(want, "view "+sys, "get "+sys)
		}
		want = append(want, "view echo+commit", "view echo+wal") // the durable ceiling and floor run single views only
		if len(systems) == 3 {
			want = append(want, "batch redis+lua")
		}
		for _, w := range want {
			if !rows[w] {
				t.Errorf("no row %q in:\n%s", w, out.String())
			}
		}
		if len(rows) != len(want) {
			t.Errorf("%d rows, want %d:\n%s", len(rows), len(want), out.String())
		}
		if !strings.Contains(out.String(), "tally/echo ") || !strings.Contains(out.String(), "tally/echo+commit") || !strings.Contains(out.String(), "tally/echo+wal") ||
			(len(systems) == 3 && (!strings.Contains(out.String(), "tally/redis+lua") || !strings.Contains(out.String(), "echo+commit/redis+lua") ||
				!strings.Contains(out.String(), "echo+wal/redis+lua"))) {
			t.Errorf("ratios missing:\n%s", out.String())
		}
		// The paced runs' p99 three ways, each a figure, and the slowest
		// fsync of a view run (it commits).
		for _, run := range []string{"view@50%", "get@50%"} {
			re := regexp.MustCompile(`(?m)^  half +` + regexp.QuoteMeta(run) + ` +tally +[0-9.]+(ms|s) / +[0-9.]+(ms|s) / +[0-9.]+(ms|s) +(≤[0-9.]+(ms|s)|-)$`)
			if !re.MatchString(out.String()) {
				t.Errorf("no p99 three ways for %s in:\n%s", run, out.String())
			}
		}
		if !regexp.MustCompile(`(?m)^  half +view@50% +tally .* ≤[0-9.]+(ms|s)$`).MatchString(out.String()) {
			t.Errorf("no slowest fsync for view@50%% in:\n%s", out.String())
		}
	})

	t.Run("scale", func(t *testing.T) {
		cmd := exec.CommandContext(ctx, bin, "bench", "scale", "--keys", "3000", "--batch", "500", "--sample", "300",
			"--read-conns", "4", "--dir", filepath.Join(t.TempDir(), "s"))
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("tally bench scale: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errb.String())
		}
		// Every cold and warm read found its video with one view (else the
		// run fails); the report has every figure.
		for _, want := range []string{"3000 distinct videos", "RAM after ingest", "RAM after restart", "disk ", "startup ",
			"GET cold          300 reads", "GET warm          300 reads"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("report lacks %q:\n%s", want, out.String())
			}
		}
	})

	t.Run("visibility", func(t *testing.T) {
		c, err := startCluster(ctx, clusterSpec{Exe: bin, Dir: t.TempDir(), Regions: 2, Nodes: 1, Extra: []string{"--sync-interval", "20ms"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Stop(20 * time.Second)
		var eps []string
		for _, n := range c.Nodes {
			eps = append(eps, "http://"+n.HTTP)
		}
		var out, errb bytes.Buffer
		code := run(ctx, []string{"bench", "visibility", "--endpoints", strings.Join(eps, ","), "--probes", "6",
			"--load-rate", "100", "--warmup", "200ms", "--label", "sync 20ms"}, &out, &errb)
		if code != 0 {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
		}
		line := lastLine(out.String(), "visibility: ")
		for _, want := range []string{"label=sync_20ms ", "nodes=2 ", "probes=6 complete=6 timedOut=0 failed=0 ", "load_errors=0 "} {
			if !strings.Contains(line, want) {
				t.Errorf("summary lacks %q: %s", want, line)
			}
		}
	})
}
