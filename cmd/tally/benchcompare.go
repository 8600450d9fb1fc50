package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// "tally bench compare" (issue 9) runs tally side by side with the seeds'
// Redis design and with two ceilings, a bare echo server and one that logs
// each single view durably before it answers, on this machine, under one
// closed-loop load generator: the same connections, the same user/video
// mixes, the same duration for each system.

// seedsDedupScript is the seeds' Redis design (shared/seeds, "Redis
// Pipelining vs Lua"): count a view only if the user is not yet in the
// video's viewer set, atomically.
const seedsDedupScript = `if redis.call("SISMEMBER", KEYS[2], ARGV[1]) == 0 then
  redis.call("INCR", KEYS[1])
  redis.call("SADD", KEYS[2], ARGV[1])
  return 1
else
  return 0
end`

// cmpConfig is what "tally bench compare" does.
type cmpConfig struct {
	RedisServer string // path of redis-server; empty skips Redis
	NoEcho      bool
	Duration    time.Duration
	Conns       int
	BatchConns  int
	BatchSize   int
	Videos      int
	Repeat      float64
	Mixes       []cmpMix
	Runs        []string      // view, get, batch
	Paced       bool          // also run tally at 50% of its peak for latency
	QuietWait   time.Duration // the most to wait for a quiet machine before each run (settle); 0: none
	Dir         string
	ServeFlags  []string
	Seed        int64
}

// cmpMix is a user/video mix: a fraction of the load on one hot video, the
// rest spread uniformly over cfg.Videos videos.
type cmpMix struct {
	Name string
	Hot  float64
}

// Bounds of the comparison benchmark.
const (
	cmpMaxDuration = 2 * time.Minute
	cmpMaxOps      = 200_000_000 // per run, whatever the duration
	cmpMaxSamples  = 1 << 21     // latencies kept per worker
)

// runBenchCompare is "tally bench compare".
func runBenchCompare(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tally bench compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg cmpConfig
	fs.StringVar(&cfg.RedisServer, "redis-server", "redis-server", "redis-server `binary` (looked up in PATH); empty skips Redis")
	fs.BoolVar(&cfg.NoEcho, "no-echo", false, "skip the echo ceilings (bare and durable)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "length of each run (max 2m)")
	fs.IntVar(&cfg.Conns, "conns", 64, "closed-loop connections of single-view and read runs")
	fs.DurationVar(&cfg.QuietWait, "quiet-wait", time.Minute, "before each run, wait up to this long for the machine to be under 10% busy (0: do not wait)")
	fs.IntVar(&cfg.BatchConns, "batch-conns", 64, "connections of batch runs (an ingest tier of many senders)")
	fs.IntVar(&cfg.BatchSize, "batch", 1000, "views per batch (one POST /v1/events; one Redis pipeline of EVALSHA)")
	fs.IntVar(&cfg.Videos, "videos", 10000, "distinct videos of the spread part of the mix")
	fs.Float64Var(&cfg.Repeat, "repeat", 0.1, "fraction of views resending an acknowledged (video, user): duplicates")
	mixes := fs.String("mixes", "spread=0,hot=1", "comma-separated NAME=HOT: HOT is the fraction of the load on one video")
	runs := fs.String("runs", "view,get,batch", "comma-separated runs: view, get, batch")
	fs.BoolVar(&cfg.Paced, "paced", true, "also run tally's view and get at 50% of their peak, for latency")
	fs.StringVar(&cfg.Dir, "dir", "", "data folder (default: a new temporary folder, removed at the end)")
	serveFlags := fs.String("serve-flags", "", "extra flags for tally serve, space separated")
	fs.Int64Var(&cfg.Seed, "seed", 1, "random seed")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	cfg.ServeFlags = strings.Fields(*serveFlags)
	var err error
	if cfg.Mixes, err = parseMixes(*mixes); err != nil {
		fmt.Fprintf(stderr, "tally bench compare: --mixes: %v\n", err)
		return 2
	}
	for _, r := range strings.Split(*runs, ",") {
		switch r = strings.TrimSpace(r); r {
		case "view", "get", "batch":
			cfg.Runs = append(cfg.Runs, r)
		default:
			fmt.Fprintf(stderr, "tally bench compare: --runs: unknown run %q\n", r)
			return 2
		}
	}
	switch {
	case fs.NArg() > 0:
		err = fmt.Errorf("unexpected arguments %q", fs.Args())
	case cfg.Duration <= 0 || cfg.Duration > cmpMaxDuration:
		err = fmt.Errorf("--duration: want (0, %s]", cmpMaxDuration)
	case cfg.QuietWait < 0:
		err = errors.New("--quiet-wait: want >= 0")
	case cfg.Conns < 1 || cfg.Conns > 1024 || cfg.BatchConns < 1 || cfg.BatchConns > 256:
		err = errors.New("--conns: want 1..1024, --batch-conns 1..256")
	case cfg.BatchSize < 1 || cfg.BatchSize > 10_000:
		err = errors.New("--batch: want 1..10000")
	case cfg.Videos < 1:
		err = errors.New("--videos: want >= 1")
	case !(cfg.Repeat >= 0 && cfg.Repeat < 1):
		err = errors.New("--repeat: want [0, 1)")
	}
	if err != nil {
		fmt.Fprintf(stderr, "tally bench compare: %v\n", err)
		return 2
	}
	if cfg.RedisServer != "" {
		if cfg.RedisServer, err = exec.LookPath(cfg.RedisServer); err != nil {
			fmt.Fprintf(stderr, "tally bench compare: redis-server not found: %v (install the Debian package redis-server: apt-get install redis-server; or pass --redis-server '' to skip Redis)\n", err)
			return 1
		}
	}
	return runBenchProcess("compare", &cfg.Dir, stderr, func(exe string) error {
		return benchCompare(ctx, exe, cfg, stdout, stderr)
	})
}

// createBenchLog creates the data folder dir and the servers' log file name
// in it.
func createBenchLog(dir, name string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("data folder: %w", err)
	}
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return nil, fmt.Errorf("server log: %w", err)
	}
	return f, nil
}

// runBenchProcess runs a "tally bench NAME" that starts tally processes:
// run gets this binary's path, and *dir is a new temporary folder (removed
// afterwards) if it was empty. It returns the command's exit code.
func runBenchProcess(name string, dir *string, stderr io.Writer, run func(exe string) error) int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "tally bench %s: find own binary: %v\n", name, err)
		return 1
	}
	if *dir == "" {
		if *dir, err = os.MkdirTemp("", "tally-bench-"+name+"-"); err != nil {
			fmt.Fprintf(stderr, "tally bench %s: data folder: %v\n", name, err)
			return 1
		}
		defer os.RemoveAll(*dir)
	}
	if err := run(exe); err != nil {
		fmt.Fprintf(stderr, "tally bench %s: %v\n", name, err)
		return 1
	}
	return 0
}

// parseMixes parses --mixes: NAME=HOT,NAME=HOT...
func parseMixes(s string) ([]cmpMix, error) {
	var out []cmpMix
	for _, part := range strings.Split(s, ",") {
		name, hot, ok := strings.Cut(strings.TrimSpace(part), "=")
		f, err := strconv.ParseFloat(hot, 64)
		if !ok || name == "" || err != nil || !(f >= 0 && f <= 1) {
			return nil, fmt.Errorf("%q: want NAME=FRACTION", part)
		}
		out = append(out, cmpMix{Name: name, Hot: f})
	}
	return out, nil
}

// cmpResult is one run's outcome.
type cmpResult struct {
	Mix, Run, System string
	Conns            int
	PacedAt          float64 // ops/s asked for; 0 for closed loop
	Ops, Errors      int64
	Views, Counted   int64
	Wrong            int64 // fresh views not counted plus resends counted: 0 for a deduplicating counter
	Checked          bool  // Wrong was checked (the system deduplicates; the echo ceilings do not)
	Elapsed          time.Duration
	P50, P99, P999   time.Duration
	// Paced runs: the p99 of how late the generator's idle workers woke for
	// their requests, and the p99 latency counted from when a request was
	// sent by an idle worker (from when it was due for a busy one).
	LateP99, SentP99 time.Duration
	// SlowestCommit bounds the fsync of tally's slowest group commit in the
	// run (upper bucket bound; 0 for other systems, or past the last bucket).
	SlowestCommit time.Duration
	ServerCPU     time.Duration // CPU time of the server process during the run
	// ServerDisk is the bytes the server process had written to storage
	// during the run (write_bytes of /proc/PID/io: the page cache's
	// writeback of its files, as the device received it); -1 if unknown.
	ServerDisk int64
	ServerP99  time.Duration // tally only: p99 by its own request histogram (upper bucket bound)
	GenCPU     time.Duration // CPU time of this process (the generator)
	FirstErr   string
}

func (r cmpResult) opsPerSec() float64   { return float64(r.Ops) / r.Elapsed.Seconds() }
func (r cmpResult) viewsPerSec() float64 { return float64(r.Views) / r.Elapsed.Seconds() }

// cmpClient is one worker's connection to a system under test.
type cmpClient interface {
	view(ctx context.Context, video, user string) (counted bool, err error)
	get(ctx context.Context, video string) error
	batch(ctx context.Context, pairs []cmpPair) (counted int, err error)
	close()
}

type cmpPair struct{ video, user string }

// cmpSystem is a server under test: how to reach it and its process.
type cmpSystem struct {
	name      string
	pid       int
	metrics   string // URL of a Prometheus endpoint with tally's request histogram; empty for others
	newClient func() cmpClient
	batches   bool // supports batch runs
	viewsOnly bool // runs single views only (its reads are another system's)
	dedups    bool // counts each (video, user) once: its answers are checked (cmpResult.Wrong)
}

func benchCompare(ctx context.Context, exe string, cfg cmpConfig, stdout, stderr io.Writer) error {
	progress := func(format string, a ...any) { fmt.Fprintf(stderr, "tally bench compare: "+format+"\n", a...) }
	var procs []*cmpProc
	defer func() {
		for _, p := range procs {
			p.stop(20 * time.Second)
		}
	}()
	logf, err := createBenchLog(cfg.Dir, "servers.log")
	if err != nil {
		return err
	}
	defer logf.Close()

	// tally serve, durable (sync durability, the default), on its own folder.
	tallyAddr, err := freeLoopbackAddr()
	if err != nil {
		return err
	}
	targs := append([]string{"serve", "--data", filepath.Join(cfg.Dir, "tally"), "--http", tallyAddr, "--log-level", "warn"}, cfg.ServeFlags...)
	tp, err := startCmpProc(exe, targs, logf)
	if err != nil {
		return err
	}
	procs = append(procs, tp)
	if err := waitHTTP(ctx, "http://"+tallyAddr+"/readyz", 60*time.Second, tp); err != nil {
		return fmt.Errorf("tally serve: %w", err)
	}
	progress("tally serve %s (pid %d), durable, data in %s", tallyAddr, tp.cmd.Process.Pid, filepath.Join(cfg.Dir, "tally"))
	systems := []cmpSystem{{name: "tally", pid: tp.cmd.Process.Pid, batches: true, dedups: true, metrics: "http://" + tallyAddr + "/metrics", newClient: func() cmpClient {
		return &httpCmpClient{c: newBenchConn(tallyAddr, 30*time.Second)}
	}}}

	if cfg.RedisServer != "" {
		rp, rc, sha, err := startRedis(ctx, cfg.RedisServer, filepath.Join(cfg.Dir, "redis"), max(cfg.Conns, cfg.BatchConns), logf)
		if rp != nil {
			procs = append(procs, rp)
		}
		if err != nil {
			return err
		}
		defer rc.Close() //nolint:errcheck // the pool of a finished benchmark
		progress("redis-server %s (pid %d), appendonly yes, appendfsync always; dedup script loaded as %s", rc.Options().Addr, rp.cmd.Process.Pid, sha)
		systems = append(systems, cmpSystem{name: "redis+lua", pid: rp.cmd.Process.Pid, batches: true, dedups: true, newClient: func() cmpClient {
			return &redisCmpClient{rc: rc, sha: sha}
		}})
	}
	if !cfg.NoEcho {
		// The bare ceiling, then the durable one: the same echo server,
		// whose POST also logs the view through tally's group committer to
		// Badger on disk (fsync per group commit) and answers once it is
		// durable. A durable view on this stack comes little faster
		// (newEchoCeilingOn); tally's also deduplicates, counts, buckets
		// and sketches. Then the durable floor: the same server appending
		// each view to a zeroed file, one fdatasync per group commit, and
		// nothing else (walFloor): a durable view on echo that stores
		// more, group committed the same way, comes no faster on these
		// cores.
		for _, c := range []struct {
			name, what string
			extra      []string // flags of tally bench echo-server
			viewsOnly  bool     // its reads are the bare ceiling's
		}{
			{"echo", "echo ceiling: bare echo, fixed answers", nil, false},
			{"echo+commit", "durable ceiling: echo, one raw event record per view, group commit with fsync",
				[]string{"--data", filepath.Join(cfg.Dir, "echo-commit")}, true},
			{"echo+wal", "durable floor: echo, each view appended to a zeroed file, one fdatasync per group commit",
				[]string{"--wal", filepath.Join(cfg.Dir, "echo-wal.log")}, true},
		} {
			addr, err := freeLoopbackAddr()
			if err != nil {
				return err
			}
			ep, err := startCmpProc(exe, append([]string{"bench", "echo-server", "--http", addr}, c.extra...), logf)
			if err != nil {
				return err
			}
			procs = append(procs, ep)
			if err := waitHTTP(ctx, "http://"+addr+"/videos/x/views", 30*time.Second, ep); err != nil {
				return fmt.Errorf("%s server: %w", c.name, err)
			}
			progress("%s (%s, pid %d)", c.what, addr, ep.cmd.Process.Pid)
			systems = append(systems, cmpSystem{name: c.name, pid: ep.cmd.Process.Pid, viewsOnly: c.viewsOnly, newClient: func() cmpClient {
				return &httpCmpClient{c: newBenchConn(addr, 30*time.Second)}
			}})
		}
	}

	var results []cmpResult
	runID := 0 // names the fresh users of each run apart
	window := dedupWindowOf(cfg.ServeFlags)
	// do runs rc on sys once the machine is quiet, announced as what, and
	// keeps its result.
	do := func(rc cmpRunConfig, sys cmpSystem, what string) cmpResult {
		settle(ctx, cfg.QuietWait, progress)
		progress("%s", what)
		rc.runID = runID
		res := cmpRun(ctx, rc, sys)
		results = append(results, res)
		runID++
		progress("  %.0f ops/s, %.0f views/s, p99 %s, errors %d %s", res.opsPerSec(), res.viewsPerSec(), benchDur(res.P99), res.Errors, res.FirstErr)
		return res
	}
	for _, mix := range cfg.Mixes {
		for _, run := range cfg.Runs {
			for _, sys := range systems {
				if run == "batch" && !sys.batches || run != "view" && sys.viewsOnly {
					continue
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
				rc := cmpRunConfig{mix: mix, run: run, conns: cfg.Conns, videos: cfg.Videos,
					repeat: cfg.Repeat, batch: cfg.BatchSize, duration: cfg.Duration, seed: cfg.Seed, window: window}
				if run == "batch" {
					rc.conns = cfg.BatchConns
				}
				res := do(rc, sys, fmt.Sprintf("%s %s on %s: %d conns for %s", mix.Name, run, sys.name, rc.conns, cfg.Duration))
				// tally paced right after its peak run: before the batch
				// run, which writes several times as much and leaves
				// Badger compactions that would run through it, and before
				// the other systems, whose own background work (Redis
				// rewrites its append-only file in a forked process as it
				// grows, the durable ceiling flushes Badger) would share
				// the cores with it.
				// The bare echo server paced at the same rate after its own
				// peak run: the latency a server that does nothing gets on
				// these cores, shared with the generator.
				if !cfg.Paced || (run != "view" && run != "get") || res.Ops == 0 {
					continue
				}
				pace := res.opsPerSec() / 2
				switch sys.name {
				case "tally":
				case "echo":
					t := findResult(results, mix.Name, run, "tally", 1)
					if t == nil {
						continue
					}
					pace = t.PacedAt
				default:
					continue
				}
				rc.seed, rc.pace = cfg.Seed+7, pace
				do(rc, sys, fmt.Sprintf("%s %s on %s at half of tally's peak: %.0f ops/s", mix.Name, run, sys.name, pace))
			}
		}
	}
	writeCmpReport(stdout, cfg, results)
	for _, r := range results {
		if r.Errors > 0 {
			return fmt.Errorf("%s %s on %s: %d errors (first: %s)", r.Mix, r.Run, r.System, r.Errors, r.FirstErr)
		}
		if r.Wrong > 0 {
			return fmt.Errorf("%s %s on %s: %d answers against the dedup rule", r.Mix, r.Run, r.System, r.Wrong)
		}
	}
	return nil
}

// findResult is the result of mix, run and system, closed loop (paced 0) or
// paced.
func findResult(rs []cmpResult, mix, run, system string, paced float64) *cmpResult {
	for i := range rs {
		r := &rs[i]
		if r.Mix == mix && r.Run == run && r.System == system && (r.PacedAt > 0) == (paced > 0) {
			return r
		}
	}
	return nil
}

// writeCmpReport prints the table of rs and the tally/other ratios.
func writeCmpReport(w io.Writer, cfg cmpConfig, rs []cmpResult) {
	fmt.Fprintf(w, "\n== tally bench compare: %s per run, %d conns (batch: %d conns x %d views), %d videos + hot key, repeat %.2f, %d CPUs shared by servers and generator\n",
		cfg.Duration, cfg.Conns, cfg.BatchConns, cfg.BatchSize, cfg.Videos, cfg.Repeat, runtime.NumCPU())
	fmt.Fprintf(w, "%-7s %-8s %-11s %6s %11s %11s %8s %9s %9s %9s %9s %10s %10s %9s %10s %7s %6s\n",
		"mix", "run", "system", "conns", "ops/s", "views/s", "counted", "p50", "p99", "p999", "srv-p99≤", "srv-cores", "srv-µs/v", "srv-B/v", "gen-cores", "errors", "wrong")
	// Rows in the order run, but a paced run after the closed-loop runs of
	// its mix and kind (it ran right after tally's).
	rows := slices.Clone(rs)
	group := func(r cmpResult) int {
		return slices.IndexFunc(rs, func(o cmpResult) bool { return o.Mix == r.Mix && o.Run == r.Run })
	}
	slices.SortStableFunc(rows, func(a, b cmpResult) int {
		return cmp.Or(cmp.Compare(group(a), group(b)), cmp.Compare(a.PacedAt, b.PacedAt))
	})
	for _, r := range rows {
		run := r.Run
		if r.PacedAt > 0 {
			run += "@50%"
		}
		perView, per := 0.0, r.Views // CPU and disk per view, per op for reads
		if per == 0 {
			per = r.Ops
		}
		if per > 0 {
			perView = float64(r.ServerCPU.Microseconds()) / float64(per)
		}
		disk := "-"
		if r.ServerDisk >= 0 && per > 0 {
			disk = strconv.FormatInt(r.ServerDisk/per, 10)
		}
		srvP99 := "-"
		if r.ServerP99 > 0 {
			srvP99 = benchDur(r.ServerP99)
		}
		wrong := "-"
		if r.Checked && r.Views > 0 {
			wrong = strconv.FormatInt(r.Wrong, 10)
		}
		counted := "-"
		if r.Views > 0 {
			counted = strconv.FormatFloat(100*float64(r.Counted)/float64(r.Views), 'f', 1, 64) + "%"
		}
		fmt.Fprintf(w, "%-7s %-8s %-11s %6d %11.0f %11.0f %8s %9s %9s %9s %9s %10.2f %10.2f %9s %10.2f %7d %6s\n",
			r.Mix, run, r.System, r.Conns, r.opsPerSec(), r.viewsPerSec(), counted, benchDur(r.P50), benchDur(r.P99), benchDur(r.P999), srvP99,
			r.ServerCPU.Seconds()/r.Elapsed.Seconds(), perView, disk, r.GenCPU.Seconds()/r.Elapsed.Seconds(), r.Errors, wrong)
	}
	fmt.Fprintln(w, "\nratios (ops/s):")
	for _, mix := range cfg.Mixes {
		for _, run := range cfg.Runs {
			t := findResult(rs, mix.Name, run, "tally", 0)
			if t == nil {
				continue
			}
			for _, other := range []string{"redis+lua", "echo", "echo+commit", "echo+wal"} {
				o := findResult(rs, mix.Name, run, other, 0)
				if o == nil || o.Ops == 0 {
					continue
				}
				fmt.Fprintf(w, "  %-7s %-6s tally/%-11s = %.2f\n", mix.Name, run, other, t.opsPerSec()/o.opsPerSec())
			}
			// How far a durable view on this stack, and on echo at all, can go.
			r := findResult(rs, mix.Name, run, "redis+lua", 0)
			for _, c := range []struct{ name, what string }{
				{"echo+commit", "a durable view on echo and Badger that does nothing else"},
				{"echo+wal", "the floor: a durable view on echo, one append and a group fdatasync, nothing else"},
			} {
				if o := findResult(rs, mix.Name, run, c.name, 0); o != nil && r != nil && r.Ops > 0 {
					fmt.Fprintf(w, "  %-7s %-6s %s/redis+lua = %.2f (%s)\n", mix.Name, run, c.name, o.opsPerSec()/r.opsPerSec(), c.what)
				}
			}
		}
	}
	paced := false
	for _, r := range rs {
		if r.PacedAt == 0 {
			continue
		}
		if !paced {
			fmt.Fprintln(w, "\npaced runs, p99 three ways: from schedule (the table's) / from sending / the generator's own lateness; tally's slowest fsync:")
			paced = true
		}
		slowest := "-"
		if r.SlowestCommit > 0 {
			slowest = "≤" + benchDur(r.SlowestCommit)
		}
		fmt.Fprintf(w, "  %-7s %-8s %-11s %9s / %9s / %9s   %s\n", r.Mix, r.Run+"@50%", r.System, benchDur(r.P99), benchDur(r.SentP99), benchDur(r.LateP99), slowest)
	}
	fmt.Fprintln(w, "\ncounted: views the system counted (the rest were duplicates: --repeat resends acknowledged pairs);")
	fmt.Fprintln(w, "wrong: fresh (video, user) pairs not counted plus resends counted; 0 for a deduplicating counter (any other fails the run);")
	if cfg.QuietWait > 0 {
		fmt.Fprintf(w, "Each run starts once the machine is quiet (under 10%% busy over half a second; at most %s of waiting), so that\n", cfg.QuietWait)
		fmt.Fprintln(w, "no run shares the cores with background work the run before left (Badger compactions, Redis's rewrite of its log),")
		fmt.Fprintln(w, "and once the kernel has written back every dirty page (sync), so that none shares the disk with that writeback.")
	}
	fmt.Fprintln(w, "srv-cores: CPU of the server process over the run (cores busy); srv-µs/v: its CPU per view (per op for reads);")
	fmt.Fprintln(w, "srv-B/v: bytes the server process had the kernel write to storage during the run, per view (per op for reads):")
	fmt.Fprintln(w, "its logs and fsyncs as the device got them (Redis's rewrite of its log, in a forked child, is not in it);")
	fmt.Fprintln(w, "gen-cores: CPU of the load generator (this process), on the same cores. p50..p999: as the generator saw them;")
	fmt.Fprintln(w, "echo: bare echo, fixed answers, no state; echo+commit: echo that logs each view as one raw event through tally's group")
	fmt.Fprintln(w, "committer to Badger (fsync per group commit) before answering: the durable ceiling of a single view on this stack;")
	fmt.Fprintln(w, "echo+wal: echo that appends each view as a line to a zeroed file and answers after the fdatasync of its group commit,")
	fmt.Fprintln(w, "nothing else: the floor of a durable view on echo, group committed the same way, on these cores.")
	fmt.Fprintln(w, "srv-p99≤: tally's own p99 from its request histogram (tally_http_request_duration_seconds, upper bucket bound).")
	fmt.Fprintln(w, "Paced runs (@50%) send at half of tally's peak ops/s, on tally and on the bare echo server (the latency a server")
	fmt.Fprintln(w, "that does nothing gets on these cores); their latencies count from each request's scheduled start (no coordinated omission).")
	fmt.Fprintln(w, "From sending: from when an idle connection sent it (from its scheduled start if every connection was busy);")
	fmt.Fprintln(w, "the generator's lateness: how late an idle connection woke for a request, on cores it shares with the server.")
}

// cmpRunConfig is one run.
type cmpRunConfig struct {
	mix      cmpMix
	run      string
	conns    int
	videos   int
	runID    int // fresh users of run N are uN-..., never seen before
	repeat   float64
	batch    int
	duration time.Duration
	pace     float64 // total ops/s; 0: closed loop
	seed     int64
	// window is tally's dedup window (--dedup-window; 0: its default of
	// 24h), aligned to the Unix epoch as tally aligns it: a resend of a
	// pair acknowledged in an earlier window is counted again, rightly.
	window time.Duration
}

// windowAt is the index of the dedup window holding t.
func (rc *cmpRunConfig) windowAt(t time.Time) int64 {
	w := rc.window
	if w <= 0 {
		w = 24 * time.Hour
	}
	return t.UnixMilli() / w.Milliseconds()
}

// dedupWindowOf is the --dedup-window among tally serve's flags, or 0.
func dedupWindowOf(flags []string) time.Duration {
	for i, f := range flags {
		name, value, hasValue := strings.Cut(strings.TrimLeft(f, "-"), "=")
		if name != "dedup-window" || !strings.HasPrefix(f, "-") {
			continue
		}
		if !hasValue && i+1 < len(flags) {
			value = flags[i+1]
		}
		if d, err := time.ParseDuration(value); err == nil {
			return d
		}
	}
	return 0
}

// cmpWorker is one closed-loop (or paced) client.
type cmpWorker struct {
	rc   *cmpRunConfig
	rng  *rand.Rand
	next int // next fresh user of this worker
	ring []cmpPair
	// ringWindow is the dedup window every pair in ring was acknowledged
	// in: a pair is resent only in that window.
	ringWindow int64
	lat        []time.Duration
	// Paced runs only, per request: how late its idle worker woke for it
	// (0 if the worker was busy when it came due), and its latency from
	// when it was sent (idle worker) or due (busy worker).
	late, latSent []time.Duration
	ops, errs     int64
	views         int64
	counted       int64
	wrong         int64 // answers against the dedup rule (see cmpResult.Wrong)
	firstErr      string
	pairs         []cmpPair
}

// pick is the next view, to be sent in dedup window win: a resend of a pair
// acknowledged in win (--repeat), or a fresh user (never seen by any run) on
// the hot video or a random one of the spread. fresh tells which: a fresh
// view must be counted, a resend must not (if it reaches tally in win).
func (w *cmpWorker) pick(win int64) (p cmpPair, fresh bool) {
	rc := w.rc
	if len(w.ring) > 0 && win != w.ringWindow {
		w.ring = w.ring[:0] // a new window: the pairs would count again
	}
	if rc.repeat > 0 && len(w.ring) > 0 && w.rng.Float64() < rc.repeat {
		return w.ring[w.rng.IntN(len(w.ring))], false
	}
	p.user = "u" + strconv.Itoa(rc.runID) + "-" + strconv.Itoa(w.next)
	w.next += rc.conns
	if rc.mix.Hot > 0 && (rc.mix.Hot >= 1 || w.rng.Float64() < rc.mix.Hot) {
		p.video = rc.mix.Name + "-hot"
	} else {
		p.video = rc.mix.Name + "-v" + strconv.Itoa(w.rng.IntN(rc.videos))
	}
	return p, true
}

// remember keeps p, acknowledged in dedup window win, for resends.
func (w *cmpWorker) remember(p cmpPair, win int64) {
	if win != w.ringWindow {
		w.ring, w.ringWindow = w.ring[:0], win
	}
	if len(w.ring) < 4096 {
		w.ring = append(w.ring, p)
	} else {
		w.ring[w.rng.IntN(len(w.ring))] = p
	}
}

// fail counts a failed operation.
func (w *cmpWorker) fail(err error) {
	w.errs++
	if w.firstErr == "" {
		w.firstErr = err.Error()
	}
}

// one runs one operation of the run on c.
func (w *cmpWorker) one(ctx context.Context, c cmpClient) {
	switch w.rc.run {
	case "view":
		win := w.rc.windowAt(time.Now()) // before the pick: resends are of this window
		p, fresh := w.pick(win)
		counted, err := c.view(ctx, p.video, p.user)
		w.views++
		if err != nil {
			w.fail(err)
			return
		}
		if counted {
			w.counted++
		}
		if w.rc.windowAt(time.Now()) != win {
			// A dedup window ended while the request was out: tally took
			// it in either, and a resend may rightly count again.
			return
		}
		w.remember(p, win)
		if counted != fresh {
			w.wrong++
		}
	case "get":
		var video string
		if h := w.rc.mix.Hot; h > 0 && (h >= 1 || w.rng.Float64() < h) {
			video = w.rc.mix.Name + "-hot"
		} else {
			video = w.rc.mix.Name + "-v" + strconv.Itoa(w.rng.IntN(w.rc.videos))
		}
		if err := c.get(ctx, video); err != nil {
			w.fail(err)
		}
	case "batch":
		w.pairs = w.pairs[:0]
		fresh := 0
		win := w.rc.windowAt(time.Now()) // before the picks (see view)
		for range w.rc.batch {
			p, f := w.pick(win)
			w.pairs = append(w.pairs, p)
			if f {
				fresh++
			}
		}
		n, err := c.batch(ctx, w.pairs)
		w.views += int64(len(w.pairs))
		if err != nil {
			w.fail(err)
			return
		}
		w.counted += int64(n)
		if w.rc.windowAt(time.Now()) != win {
			return // a window ended meanwhile (see view)
		}
		w.wrong += int64(max(n-fresh, fresh-n))
		for _, p := range w.pairs {
			w.remember(p, win)
		}
	}
}

// cmpRun drives sys with rc and measures it.
func cmpRun(ctx context.Context, rc cmpRunConfig, sys cmpSystem) cmpResult {
	workers := make([]*cmpWorker, rc.conns)
	clients := make([]cmpClient, rc.conns)
	for i := range workers {
		workers[i] = &cmpWorker{rc: &rc, rng: rand.New(rand.NewPCG(uint64(rc.seed), uint64(i)+uint64(rc.runID)<<20)), next: i}
		clients[i] = sys.newClient()
	}
	defer func() {
		for _, c := range clients {
			c.close()
		}
	}()
	route, method := cmpRoute(rc.run)
	var hist0, commits0 map[float64]float64
	if sys.metrics != "" {
		hist0, commits0 = scrapeRun(sys.metrics, route, method)
	}
	srv0, gen0, disk0 := procCPU(sys.pid), procCPU(os.Getpid()), procWriteBytes(sys.pid)
	start := time.Now()
	deadline := start.Add(rc.duration)
	var issued atomic.Int64
	take := func() bool { return issued.Add(1) <= cmpMaxOps }
	var slot atomic.Int64 // paced: the next request of the schedule
	var wg sync.WaitGroup
	for i, w := range workers {
		c := clients[i]
		wg.Go(func() {
			for ctx.Err() == nil {
				begin := time.Now()
				sent, late := begin, time.Duration(0)
				if rc.pace > 0 {
					// Paced: request k of the run is due at k/pace, and
					// whichever connection is free takes the next request
					// due (an open-loop schedule served by a pool of
					// connections, as a fleet of clients sends); latency
					// counts from when it was due, so a request that found
					// every connection busy counts its wait.
					k := slot.Add(1) - 1
					due := start.Add(time.Duration(float64(k) / rc.pace * float64(time.Second)))
					sent = due
					if d := time.Until(due); d > 0 {
						time.Sleep(d)
						// The worker was idle until due: what it woke late
						// by is the generator's own delay (a core busy
						// elsewhere), not a wait for the server.
						sent = time.Now()
						late = sent.Sub(due)
					}
					begin = due
				}
				if !time.Now().Before(deadline) || !take() {
					return
				}
				w.one(ctx, c)
				w.ops++
				if len(w.lat) < cmpMaxSamples {
					w.lat = append(w.lat, time.Since(begin))
					if rc.pace > 0 {
						w.late = append(w.late, late)
						w.latSent = append(w.latSent, time.Since(sent))
					}
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	res := cmpResult{Mix: rc.mix.Name, Run: rc.run, System: sys.name, Conns: rc.conns, PacedAt: rc.pace, Elapsed: elapsed, Checked: sys.dedups,
		ServerCPU: procCPU(sys.pid) - srv0, GenCPU: procCPU(os.Getpid()) - gen0, ServerDisk: -1}
	if disk1 := procWriteBytes(sys.pid); disk0 >= 0 && disk1 >= disk0 {
		res.ServerDisk = disk1 - disk0
	}
	if sys.metrics != "" {
		hist1, commits1 := scrapeRun(sys.metrics, route, method)
		res.ServerP99 = histogramQuantile(hist0, hist1, 0.99)
		res.SlowestCommit = histogramQuantile(commits0, commits1, 1)
	}
	var lat, late, latSent []time.Duration
	for _, w := range workers {
		res.Ops += w.ops
		res.Errors += w.errs
		res.Views += w.views
		res.Counted += w.counted
		if sys.dedups {
			res.Wrong += w.wrong
		}
		if res.FirstErr == "" {
			res.FirstErr = w.firstErr
		}
		lat = append(lat, w.lat...)
		late = append(late, w.late...)
		latSent = append(latSent, w.latSent...)
	}
	for _, d := range [][]time.Duration{lat, late, latSent} {
		slices.Sort(d)
	}
	res.P50, res.P99, res.P999 = quantile(lat, 0.50), quantile(lat, 0.99), quantile(lat, 0.999)
	res.LateP99, res.SentP99 = quantile(late, 0.99), quantile(latSent, 0.99)
	return res
}

// quantile is the p quantile of sorted (nearest rank; 0 if empty).
func quantile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

// Before each run, bench compare waits for the machine to be quiet: under
// quietBusy of its CPU busy over quietSample, for at most --quiet-wait. A
// run then shares the cores with no background work left by the one before
// it, of any system (Badger's compactions after a batch run, Redis's rewrite
// of its append-only file in a forked process, the kernel's writeback).
const (
	quietBusy   = 0.10
	quietSample = 500 * time.Millisecond
)

// settle writes back every dirty page (syncDisks: the disk is not quiet
// while the kernel writes back what the build or the run before left, and
// only CPU is sampled), then waits up to quietMax for the machine to be
// quiet (see quietBusy) and says how long it waited, if at all.
func settle(ctx context.Context, quietMax time.Duration, progress func(string, ...any)) {
	if quietMax <= 0 {
		return
	}
	start := time.Now()
	syncDisks()
	for {
		busy, ok := machineBusy(ctx, quietSample)
		switch {
		case !ok: // no /proc/stat, or ctx ended: do not wait
			return
		case busy < quietBusy:
			if waited := time.Since(start); waited > quietSample {
				progress("  waited %s for the machine to be quiet", waited.Round(100*time.Millisecond))
			}
			return
		case time.Since(start) >= quietMax:
			progress("  the machine is still %.0f%% busy after %s; running anyway", 100*busy, quietMax)
			return
		}
	}
}

// machineBusy is the fraction of the machine's CPU time that was busy (not
// idle or waiting for I/O) over the next d, from /proc/stat.
func machineBusy(ctx context.Context, d time.Duration) (float64, bool) {
	busy0, total0, ok := cpuTimes()
	if !ok {
		return 0, false
	}
	select {
	case <-ctx.Done():
		return 0, false
	case <-time.After(d):
	}
	busy1, total1, ok := cpuTimes()
	if !ok || total1 <= total0 {
		return 0, false
	}
	return float64(busy1-busy0) / float64(total1-total0), true
}

// cpuTimes reads the machine's busy and total CPU time, in ticks, from the
// first line of /proc/stat: user nice system idle iowait irq softirq steal.
func cpuTimes() (busy, total int64, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, false
	}
	for i, v := range f[1:9] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, 0, false
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total, true
}

// procWriteBytes is the write_bytes of process pid so far: what it had the
// kernel write to storage (/proc/PID/io); -1 if unknown.
func procWriteBytes(pid int) int64 {
	n, ok := procField(pid, "io", "write_bytes:")
	if !ok {
		return -1
	}
	return n
}

// procCPU is the user+system CPU time of process pid so far (0 if unknown).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ is 100 on Linux
}

// httpCmpClient talks to tally (or the echo ceiling) over HTTP.
type httpCmpClient struct {
	c    *benchConn
	path []byte
	body []byte
}

// videoPath is /videos/VIDEO/views.
func (h *httpCmpClient) videoPath(video string) string {
	h.path = append(append(append(h.path[:0], "/videos/"...), video...), "/views"...)
	return string(h.path)
}

func (h *httpCmpClient) view(_ context.Context, video, user string) (bool, error) {
	h.body = append(append(append(h.body[:0], `{"userId":"`...), user...), `"}`...)
	code, resp, err := h.c.do(http.MethodPost, h.videoPath(video), h.body)
	if err != nil {
		return false, err
	}
	if code != http.StatusOK {
		return false, fmt.Errorf("POST view: HTTP %d: %.200s", code, resp)
	}
	return bytes.Contains(resp, []byte(`"counted":true`)), nil
}

func (h *httpCmpClient) get(_ context.Context, video string) error {
	code, resp, err := h.c.do(http.MethodGet, h.videoPath(video), nil)
	if err != nil {
		return err
	}
	if code != http.StatusOK || !bytes.Contains(resp, []byte(`"viewCount":`)) {
		return fmt.Errorf("GET views: HTTP %d: %.200s", code, resp)
	}
	return nil
}

func (h *httpCmpClient) batch(_ context.Context, pairs []cmpPair) (int, error) {
	b := append(h.body[:0], '[')
	for i, p := range pairs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"videoId":"`...)
		b = append(b, p.video...)
		b = append(b, `","userId":"`...)
		b = append(b, p.user...)
		b = append(b, `"}`...)
	}
	h.body = append(b, ']')
	code, resp, err := h.c.do(http.MethodPost, "/v1/events", h.body)
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("POST /v1/events: HTTP %d: %.200s", code, resp)
	}
	_, rest, ok := bytes.Cut(resp, []byte(`"counted":`))
	if !ok {
		return 0, fmt.Errorf("POST /v1/events: no count in %.200s", resp)
	}
	end := bytes.IndexAny(rest, ",}")
	if end < 0 {
		return 0, fmt.Errorf("POST /v1/events: bad count in %.200s", resp)
	}
	return strconv.Atoi(string(rest[:end]))
}

func (h *httpCmpClient) close() { h.c.close() }

// startRedis starts redis-server (the binary bin) on a free loopback port
// with its files in dir, durable as the seeds' design must be to compare
// with tally (appendonly yes, appendfsync always: fsync before every
// answer), loads the dedup script and returns the process (to stop, even
// with an error), a client with a pool of conns connections and the
// script's SHA.
func startRedis(ctx context.Context, bin, dir string, conns int, log io.Writer) (*cmpProc, *redis.Client, string, error) {
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, nil, "", err
	}
	_, port, _ := net.SplitHostPort(addr)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, "", fmt.Errorf("redis folder: %w", err)
	}
	rp, err := startCmpProc(bin, []string{"--port", port, "--bind", "127.0.0.1", "--dir", dir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
		"--protected-mode", "yes", "--maxclients", "10000"}, log)
	if err != nil {
		return nil, nil, "", err
	}
	rc := redis.NewClient(&redis.Options{Addr: addr, PoolSize: conns + 4, MinIdleConns: conns,
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, DialTimeout: 5 * time.Second,
		MaxRetries: -1, Protocol: 2})
	var sha string
	err = benchWait(ctx, 30*time.Second, 50*time.Millisecond, func() (bool, error) {
		if rp.exited() {
			return false, errors.New("redis-server exited; see its log")
		}
		var err error
		sha, err = rc.ScriptLoad(ctx, seedsDedupScript).Result()
		return err == nil, err
	})
	if err != nil {
		rc.Close() //nolint:errcheck // failed anyway
		return rp, nil, "", fmt.Errorf("redis-server: load the dedup script: %w", err)
	}
	return rp, rc, sha, nil
}

// redisCmpClient runs the seeds' design: EVALSHA of the dedup script per
// view (a pipeline of them per batch), GET of the count.
type redisCmpClient struct {
	rc  *redis.Client
	sha string
}

func (r *redisCmpClient) view(ctx context.Context, video, user string) (bool, error) {
	n, err := r.rc.EvalSha(ctx, r.sha, []string{"views:" + video, "viewers:" + video}, user).Int()
	if err != nil {
		return false, fmt.Errorf("EVALSHA: %w", err)
	}
	return n == 1, nil
}

func (r *redisCmpClient) get(ctx context.Context, video string) error {
	if err := r.rc.Get(ctx, "views:"+video).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("GET: %w", err)
	}
	return nil
}

func (r *redisCmpClient) batch(ctx context.Context, pairs []cmpPair) (int, error) {
	pipe := r.rc.Pipeline()
	cmds := make([]*redis.Cmd, len(pairs))
	for i, p := range pairs {
		cmds[i] = pipe.EvalSha(ctx, r.sha, []string{"views:" + p.video, "viewers:" + p.video}, p.user)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("pipeline of %d EVALSHA: %w", len(pairs), err)
	}
	counted := 0
	for _, c := range cmds {
		if n, _ := c.Int(); n == 1 {
			counted++
		}
	}
	return counted, nil
}

func (r *redisCmpClient) close() {}

// cmpProc is a server process the benchmark started; it stops it by PID.
type cmpProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startCmpProc starts path with args, its output to log.
func startCmpProc(path string, args []string, log io.Writer) (*cmpProc, error) {
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", filepath.Base(path), err)
	}
	p := &cmpProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait() //nolint:errcheck // a server stopped by signal exits non-zero
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended.
func (p *cmpProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL after grace.
func (p *cmpProc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // it may have exited meanwhile
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Process.Kill() //nolint:errcheck // it may have exited meanwhile
		<-p.done
	}
}

// waitHTTP polls url until it answers 200.
func waitHTTP(ctx context.Context, url string, limit time.Duration, p *cmpProc) error {
	cl := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil}}
	return benchWait(ctx, limit, 50*time.Millisecond, func() (bool, error) {
		if p.exited() {
			return false, errors.New("the process exited; see servers.log")
		}
		resp, err := cl.Get(url)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, fmt.Errorf("HTTP %d", resp.StatusCode)
	})
}

// freeLoopbackAddr returns a 127.0.0.1 address whose port was free a moment ago.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// cmpRoute is the route template and method of a run, as tally's metrics label them.
func cmpRoute(run string) (route, method string) {
	switch run {
	case "view":
		return "/videos/:videoId/views", "POST"
	case "get":
		return "/videos/:videoId/views", "GET"
	default:
		return "/v1/events", "POST"
	}
}

// fetchMetrics returns the text of the /metrics page at url ("" if it
// cannot be read).
func fetchMetrics(url string) string {
	// Generous: a node of ten million videos at its memory limit took more
	// than 5 s to answer right after ingest.
	cl := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := cl.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return ""
	}
	return string(body)
}

// scrapeValues reads the values of the unlabelled series names from the
// /metrics page at url; a series it cannot read is missing from the map.
func scrapeValues(url string, names ...string) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(fetchMetrics(url), "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || !slices.Contains(names, name) {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			out[name] = v
		}
	}
	return out
}

// requestHistogram is tally's request latency histogram, by route and method.
const requestHistogram = "tally_http_request_duration_seconds"

// scrapeRun reads, from one scrape of url, what a run reports of tally's
// own histograms, as cumulative buckets (upper bound → count):
// requestHistogram for route and method, and the fsync time of its group
// commits.
func scrapeRun(url, route, method string) (requests, commits map[float64]float64) {
	body := fetchMetrics(url)
	return parseBuckets(body, requestHistogram, map[string]string{"route": route, "method": method}),
		parseBuckets(body, "tally_group_commit_fsync_seconds", nil)
}

// parseBuckets reads the cumulative buckets of histogram metric, summed
// over its series whose labels include want, from a /metrics body (nil for
// an empty body).
func parseBuckets(body, metric string, want map[string]string) map[float64]float64 {
	if body == "" {
		return nil
	}
	out := map[float64]float64{}
	name := metric + "_bucket{"
	for _, line := range strings.Split(body, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok || !benchLabelsMatch(labels, want) {
			continue
		}
		le := ""
		for _, kv := range strings.Split(labels, ",") {
			if v, ok := strings.CutPrefix(kv, `le="`); ok {
				le = strings.TrimSuffix(v, `"`)
			}
		}
		bound, err1 := strconv.ParseFloat(le, 64)
		n, err2 := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err1 == nil && err2 == nil {
			out[bound] += n
		}
	}
	return out
}

// histogramQuantile is the upper bound of the bucket holding quantile q of
// the observations between two scrapes (0 if none).
func histogramQuantile(before, after map[float64]float64, q float64) time.Duration {
	bounds := make([]float64, 0, len(after))
	for b := range after {
		bounds = append(bounds, b)
	}
	slices.Sort(bounds)
	if len(bounds) == 0 {
		return 0
	}
	total := after[bounds[len(bounds)-1]] - before[bounds[len(bounds)-1]]
	if total <= 0 {
		return 0
	}
	for _, b := range bounds {
		if after[b]-before[b] >= q*total {
			if math.IsInf(b, 1) {
				return 0
			}
			return time.Duration(b * float64(time.Second))
		}
	}
	return 0
}
