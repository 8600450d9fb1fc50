package sim

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"
)

// Options are what `tally sim` runs.
type Options struct {
	// Params is the base parameter set; Params.Seed is the first seed.
	Params Params
	// Seeds is the number of seeds to run, Seed..Seed+Seeds-1. With more than
	// one, each seed prints only its verdict (all of it with Verbose), then a
	// summary.
	Seeds    int
	Parallel int // seeds run at once (each on its own goroutine); default 1
	Verbose  bool
	// Plot, if set, is an SVG file to draw the (single) run into;
	// PlotVideo picks one video instead of the sum over all.
	Plot      string
	PlotVideo string
	// Script, if set, runs a scenario script instead of seeds.
	Script string
}

// RunSeed runs one seed of base (base.Seed is replaced by seed; with Swarm
// the parameters are randomised from it) and writes its whole output to out.
func RunSeed(base Params, seed uint64, out io.Writer) Result {
	r, _ := runSeed(base, seed, out, "", "")
	return r
}

func runSeed(base Params, seed uint64, out io.Writer, plotFile, plotVideo string) (Result, error) {
	p := base
	p.Seed = seed
	p = p.swarmed()
	s, err := newSim(p, nil, out, plotFile != "")
	if err != nil {
		fmt.Fprintf(out, "tally sim %s\nFAILED setup: %v reproduce: %s\n", p, err, base.Reproduce(seed))
		return Result{Seed: seed, Params: p, Failure: "setup: " + err.Error(), Converge: -1}, nil
	}
	if plotFile != "" {
		s.plot.video = -1
		if plotVideo != "" {
			vi := slices.Index(s.videos, plotVideo)
			if vi < 0 {
				s.close()
				return Result{}, fmt.Errorf("--plot-video %q: videos are v1..v%d", plotVideo, len(s.videos))
			}
			s.plot.video = vi
		}
	}
	s.run()
	r := s.result()
	s.report(r, base)
	if plotFile != "" {
		if err := s.writePlot(plotFile, plotVideo); err != nil {
			return r, err
		}
	}
	return r, nil
}

// Run is `tally sim`: it returns the process exit code (0 all passed, 1 a
// seed failed, 2 bad options). Per-seed output is deterministic; the wall
// time of a multi-seed run goes to stderr.
func Run(ctx context.Context, o Options, stdout, stderr io.Writer) int {
	if err := o.Params.Validate(); err != nil {
		fmt.Fprintf(stderr, "tally sim: %v\n", err)
		return 2
	}
	if o.Script != "" {
		text, err := os.ReadFile(o.Script)
		if err != nil {
			fmt.Fprintf(stderr, "tally sim: %v\n", err)
			return 2
		}
		out, err := RunScript(string(text))
		io.WriteString(stdout, out)
		if err != nil {
			fmt.Fprintf(stderr, "tally sim: %s: %v\n", o.Script, err)
			return 1
		}
		return 0
	}
	if o.Seeds <= 1 {
		r, err := runSeed(o.Params, o.Params.Seed, stdout, o.Plot, o.PlotVideo)
		if err != nil {
			fmt.Fprintf(stderr, "tally sim: %v\n", err)
			return 1
		}
		if !r.Passed {
			return 1
		}
		return 0
	}
	if o.Plot != "" {
		fmt.Fprintf(stderr, "tally sim: --plot draws a single seed; drop --seeds\n")
		return 2
	}
	began := time.Now()
	sum := RunSeeds(ctx, o, stdout)
	fmt.Fprintf(stderr, "tally sim: %d seeds in %.1fs wall time\n", sum.Runs, time.Since(began).Seconds())
	if sum.Failed > 0 || sum.Runs < o.Seeds {
		return 1
	}
	return 0
}

// Summary aggregates a multi-seed run.
type Summary struct {
	Runs, Passed, Failed int
	Failures             []Result
	// Converge percentiles over the seeds that converged.
	ConvergeP50, ConvergeP99, ConvergeMax time.Duration
	DoubleCounted, AckedLost              int
	MaxDivergence                         uint64
	// SharesDoubleCounted and Compensations sum the seeds' (Result).
	SharesDoubleCounted int
	Compensations       [numEvents]uint64
	Likes               uint64
	LikeTransitions     int
	Evicted             uint64 // counters evicted from the nodes' memory
}

// RunSeeds runs o.Seeds seeds, o.Parallel at a time, prints each seed's
// verdict in seed order, then the summary; it stops starting seeds when ctx
// ends.
func RunSeeds(ctx context.Context, o Options, stdout io.Writer) Summary {
	base := o.Params
	fmt.Fprintf(stdout, "tally sim seeds=%d..%d %s\n", base.Seed, base.Seed+uint64(o.Seeds)-1, base)
	par := max(o.Parallel, 1)
	type done struct {
		r   Result
		out []byte
	}
	results := make([]chan done, o.Seeds)
	for i := range results {
		results[i] = make(chan done, 1)
	}
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	go func() {
		for i := range o.Seeds {
			select {
			case <-ctx.Done():
				close(results[i])
				continue
			case sem <- struct{}{}:
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				var buf bytes.Buffer
				r := RunSeed(base, base.Seed+uint64(i), &buf)
				results[i] <- done{r, buf.Bytes()}
			}()
		}
	}()
	var sum Summary
	var conv []time.Duration
	for i := range o.Seeds {
		d, ok := <-results[i]
		if !ok {
			continue
		}
		r := d.r
		sum.Runs++
		if o.Verbose {
			stdout.Write(d.out)
		}
		if r.Passed {
			sum.Passed++
		} else {
			sum.Failed++
			sum.Failures = append(sum.Failures, r)
			if !o.Verbose {
				fmt.Fprintf(stdout, "seed %d FAILED %s reproduce: %s\n", r.Seed, r.Failure, base.Reproduce(r.Seed))
			}
		}
		if r.Converge >= 0 {
			conv = append(conv, r.Converge)
		}
		sum.DoubleCounted += r.DoubleCounted
		sum.SharesDoubleCounted += r.SharesDoubleCounted
		for ev := range numEvents {
			sum.Compensations[ev] += r.Compensations[ev]
		}
		sum.Likes += r.Likes
		sum.LikeTransitions += r.LikeTransitions
		sum.Evicted += r.Evicted
		sum.AckedLost += r.AckedLost
		sum.MaxDivergence = max(sum.MaxDivergence, r.MaxDivergence)
		if (i+1)%100 == 0 && !o.Verbose {
			fmt.Fprintf(stdout, "… %d seeds run, %d failed\n", i+1, sum.Failed)
		}
	}
	wg.Wait()
	slices.Sort(conv)
	if len(conv) > 0 {
		sum.ConvergeP50, sum.ConvergeP99, sum.ConvergeMax = percentile(conv, 50), percentile(conv, 99), conv[len(conv)-1]
	}
	fmt.Fprintf(stdout, "summary: %d seeds, %d passed, %d failed; convergence after heal p50=%s p99=%s max=%s; max divergence %d; doubleCounted %d (shares %d); ackedLost %d; compensations view=%d share=%d like=%d; like transitions %d, converged likes %d; counters evicted %d\n",
		sum.Runs, sum.Passed, sum.Failed, fmtSec(sum.ConvergeP50), fmtSec(sum.ConvergeP99), fmtSec(sum.ConvergeMax), sum.MaxDivergence,
		sum.DoubleCounted, sum.SharesDoubleCounted, sum.AckedLost, sum.Compensations[evView], sum.Compensations[evShare], sum.Compensations[evLike],
		sum.LikeTransitions, sum.Likes, sum.Evicted)
	for _, r := range sum.Failures {
		fmt.Fprintf(stdout, "  FAILED seed %d: %s reproduce: %s\n", r.Seed, r.Failure, base.Reproduce(r.Seed))
	}
	if sum.Failed == 0 && sum.Runs == o.Seeds {
		fmt.Fprintf(stdout, "PASSED\n")
	} else {
		fmt.Fprintf(stdout, "FAILED\n")
	}
	return sum
}
