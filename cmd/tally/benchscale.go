package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// "tally bench scale" (issue 9) loads one node with many distinct videos and
// measures what each costs: memory, disk, startup, reads from disk.

// scaleConfig is what "tally bench scale" does.
type scaleConfig struct {
	Keys, Batch, Conns, Sample, ReadConns int
	Dir                                   string
	ServeFlags                            []string
}

// runBenchScale is "tally bench scale": many distinct videos on one node.
// It returns 0 on success, 1 if the benchmark failed, 2 on bad flags.
func runBenchScale(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tally bench scale", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sc scaleConfig
	fs.IntVar(&sc.Keys, "keys", 10_000_000, "distinct videos, one view each")
	fs.IntVar(&sc.Batch, "batch", 10_000, "events per POST /v1/events")
	fs.IntVar(&sc.Conns, "conns", 2, "ingest connections")
	fs.IntVar(&sc.Sample, "sample", 20_000, "random videos read after the restart (cold: from disk)")
	fs.IntVar(&sc.ReadConns, "read-conns", 16, "read connections")
	fs.StringVar(&sc.Dir, "dir", "", "data `folder` (default: a new temporary folder, removed at the end)")
	serveFlags := fs.String("serve-flags", "", "extra flags for tally serve, space separated")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	sc.ServeFlags = strings.Fields(*serveFlags)
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "tally bench scale: unexpected arguments %q\n", fs.Args())
		return 2
	case sc.Keys < 1 || sc.Keys > 50_000_000 || sc.Batch < 1 || sc.Batch > 10_000 || sc.Conns < 1 || sc.Conns > 64:
		fmt.Fprintln(stderr, "tally bench scale: want --keys 1..50000000, --batch 1..10000, --conns 1..64")
		return 2
	case sc.Sample < 1 || sc.Sample > sc.Keys || sc.ReadConns < 1 || sc.ReadConns > 256:
		fmt.Fprintln(stderr, "tally bench scale: want --sample 1..--keys, --read-conns 1..256")
		return 2
	}
	return runBenchProcess("scale", &sc.Dir, stderr, func(exe string) error {
		return benchScale(ctx, exe, sc, stdout, stderr)
	})
}

// benchScale runs the scale benchmark with the tally binary exe.
func benchScale(ctx context.Context, exe string, sc scaleConfig, stdout, stderr io.Writer) error {
	progress := func(format string, a ...any) { fmt.Fprintf(stderr, "tally bench scale: "+format+"\n", a...) }
	logf, err := createBenchLog(sc.Dir, "serve.log")
	if err != nil {
		return err
	}
	defer logf.Close()
	addr, err := freeLoopbackAddr()
	if err != nil {
		return err
	}
	data := filepath.Join(sc.Dir, "data")
	args := append([]string{"serve", "--data", data, "--http", addr, "--log-level", "warn"}, sc.ServeFlags...)
	start := func() (*cmpProc, time.Duration, error) {
		t0 := time.Now()
		p, err := startCmpProc(exe, args, logf)
		if err != nil {
			return nil, 0, err
		}
		if err := waitHTTP(ctx, "http://"+addr+"/readyz", 10*time.Minute, p); err != nil {
			p.stop(20 * time.Second)
			return nil, 0, fmt.Errorf("tally serve: %w", err)
		}
		return p, time.Since(t0), nil
	}
	p, _, err := start()
	if err != nil {
		return err
	}
	defer func() { p.stop(60 * time.Second) }()
	rssIdle := procRSS(p.cmd.Process.Pid)

	// 1. Ingest: every key one view of a fresh video by a fresh user.
	progress("ingesting %d videos in batches of %d over %d connections", sc.Keys, sc.Batch, sc.Conns)
	batches := (sc.Keys + sc.Batch - 1) / sc.Batch
	var next, counted atomic.Int64
	var firstErr error
	var errOnce sync.Once
	t0 := time.Now()
	var wg sync.WaitGroup
	for range sc.Conns {
		wg.Go(func() {
			c := &httpCmpClient{c: newBenchConn(addr, 60*time.Second)}
			defer c.close()
			pairs := make([]cmpPair, 0, sc.Batch)
			for ctx.Err() == nil {
				b := int(next.Add(1)) - 1
				if b >= batches {
					return
				}
				pairs = pairs[:0]
				for i := b * sc.Batch; i < min((b+1)*sc.Batch, sc.Keys); i++ {
					pairs = append(pairs, cmpPair{video: scaleVideo(i), user: "su" + strconv.Itoa(i)})
				}
				n, err := c.batch(ctx, pairs)
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				counted.Add(int64(n))
				if b%200 == 0 {
					progress("  %d of %d batches after %.0fs", b, batches, time.Since(t0).Seconds())
				}
			}
		})
	}
	wg.Wait()
	ingest := time.Since(t0)
	if firstErr != nil {
		return fmt.Errorf("ingest: %w", firstErr)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	rssLoaded := procRSS(p.cmd.Process.Pid)
	held := scrapeValues("http://"+addr+"/metrics", "tally_counters_in_memory", "tally_counters_evicted_total", "go_gc_gomemlimit_bytes")
	progress("ingested %d views (%d counted) in %.1fs: %.0f views/s; RSS %s", sc.Keys, counted.Load(), ingest.Seconds(),
		float64(sc.Keys)/ingest.Seconds(), mib(rssLoaded))

	// 2. Restart: disk size after a clean stop, time to ready, memory.
	p.stop(2 * time.Minute)
	disk := dirBytes(data)
	var startup time.Duration
	if p, startup, err = start(); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	rssRestart := procRSS(p.cmd.Process.Pid)
	progress("restarted: ready after %.2fs, RSS %s, disk %s", startup.Seconds(), mib(rssRestart), mib(disk))

	// 3. Cold reads (the counters are on disk only after the restart), then the same keys warm.
	rng := rand.New(rand.NewPCG(1, 2))
	keys := make([]int, sc.Sample)
	for i := range keys {
		keys[i] = rng.IntN(sc.Keys)
	}
	cold, err := scaleReads(ctx, addr, keys, sc.ReadConns)
	if err != nil {
		return fmt.Errorf("cold reads: %w", err)
	}
	warm, err := scaleReads(ctx, addr, keys, sc.ReadConns)
	if err != nil {
		return fmt.Errorf("warm reads: %w", err)
	}
	fmt.Fprintf(stdout, "\n== tally bench scale: %d distinct videos, one view each (batches of %d, %d conns)\n", sc.Keys, sc.Batch, sc.Conns)
	if len(sc.ServeFlags) > 0 {
		fmt.Fprintf(stdout, "tally serve flags: %s (the lines below name what a default node keeps)\n", strings.Join(sc.ServeFlags, " "))
	}
	fmt.Fprintf(stdout, "ingest            %.1fs  %.0f views/s\n", ingest.Seconds(), float64(sc.Keys)/ingest.Seconds())
	fmt.Fprintf(stdout, "RAM after ingest  %s RSS (%s idle before): %.0f B/video (all one view of a new video leaves in memory: counter, claim, buckets, unique-viewer sketch, rate limiter, Badger's share)\n",
		mib(rssLoaded), mib(rssIdle), float64(rssLoaded-rssIdle)/float64(sc.Keys))
	if c, ok := held["tally_counters_in_memory"]; ok {
		limit := "none"
		if l := held["go_gc_gomemlimit_bytes"]; l > 0 && l < math.MaxInt64 {
			limit = mib(int64(l))
		}
		fmt.Fprintf(stdout, "counters          %.0f in memory after ingest, %.0f evicted (--counter-cache); Go memory limit %s\n",
			c, held["tally_counters_evicted_total"], limit)
	} else {
		fmt.Fprintf(stdout, "counters          unknown: /metrics did not answer after ingest\n")
	}
	fmt.Fprintf(stdout, "RAM after restart %s RSS: %.0f B/video (claims of the live window and sketches load at start; counters on demand)\n",
		mib(rssRestart), float64(rssRestart-rssIdle)/float64(sc.Keys))
	fmt.Fprintf(stdout, "disk              %s: %.0f B/video (counter, claim, minute/hour/day buckets, unique-viewer chunk, raw event; after a clean stop, before compaction)\n", mib(disk), float64(disk)/float64(sc.Keys))
	fmt.Fprintf(stdout, "startup           %.2fs to /readyz\n", startup.Seconds())
	fmt.Fprintf(stdout, "GET cold          %d reads, %d conns: %.0f req/s p50=%s p99=%s p999=%s\n", len(keys), sc.ReadConns,
		cold.rate, benchDur(cold.p50), benchDur(cold.p99), benchDur(cold.p999))
	fmt.Fprintf(stdout, "GET warm          %d reads, %d conns: %.0f req/s p50=%s p99=%s p999=%s\n", len(keys), sc.ReadConns,
		warm.rate, benchDur(warm.p50), benchDur(warm.p99), benchDur(warm.p999))
	return nil
}

// scaleVideo is the ID of the scale benchmark's video i.
func scaleVideo(i int) string { return "sv" + strconv.Itoa(i) }

// scaleReadResult is the outcome of one pass of reads.
type scaleReadResult struct {
	rate           float64
	p50, p99, p999 time.Duration
}

// scaleReads GETs every key once over conns connections and checks each counts 1.
func scaleReads(ctx context.Context, addr string, keys []int, conns int) (scaleReadResult, error) {
	var next atomic.Int64
	lats := make([]time.Duration, len(keys))
	errs := make(chan error, conns)
	t0 := time.Now()
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			c := &httpCmpClient{c: newBenchConn(addr, 30*time.Second)}
			defer c.close()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= len(keys) {
					return
				}
				s := time.Now()
				code, body, err := c.c.do("GET", c.videoPath(scaleVideo(keys[i])), nil)
				lats[i] = time.Since(s)
				if err == nil && (code != 200 || !strings.Contains(string(body), `"viewCount":1`)) {
					err = fmt.Errorf("video %d: HTTP %d %.200s", keys[i], code, body)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(t0)
	select {
	case err := <-errs:
		return scaleReadResult{}, err
	default:
	}
	slices.Sort(lats)
	return scaleReadResult{rate: float64(len(keys)) / el.Seconds(), p50: quantile(lats, 0.5), p99: quantile(lats, 0.99), p999: quantile(lats, 0.999)}, nil
}

// procRSS is the resident memory of pid in bytes (0 if unknown).
func procRSS(pid int) int64 {
	kb, ok := procField(pid, "status", "VmRSS:")
	if !ok {
		return 0
	}
	return kb << 10
}

// procField is the number that follows key at the start of a line of
// /proc/PID/file, and whether there was one.
func procField(pid int, file, key string) (int64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/" + file)
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				return 0, false
			}
			n, err := strconv.ParseInt(f[0], 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// dirBytes is the disk space the files under dir take.
func dirBytes(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				if st, ok := info.Sys().(*syscall.Stat_t); ok {
					n += st.Blocks * 512 // allocated, not apparent: Badger preallocates its logs
				} else {
					n += info.Size()
				}
			}
		}
		return nil
	})
	return n
}

// mib prints b bytes in MiB.
func mib(b int64) string { return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) + " MiB" }
