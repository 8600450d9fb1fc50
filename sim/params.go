package sim

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tallyhq/tally/region"
)

// Params are the knobs of one simulation run. DefaultParams fills every
// field; every field is a flag of `tally sim` (RegisterFlags), and the first
// line a run prints lists them all.
type Params struct {
	// Seed is the run's seed; every random choice derives from it.
	Seed uint64
	// Swarm randomises the fault rates (and a few other knobs) per seed,
	// from the seed, around the values below (swarm testing).
	Swarm bool

	// Cluster shape.
	Regions int // regions, named us, eu, ap, sa, af, me, oc, ...
	Nodes   int // nodes per region, named us-1, us-2, ...

	// Phases: Duration of workload and faults (the safety phase), then a
	// healed, quiet network in which every replica must reach the reference
	// count within ConvergeWithin (the liveness phase).
	Duration       time.Duration
	ConvergeWithin time.Duration

	// Workload: Views client events spread over Duration, from Users users
	// (each with a home region and a sticky node there) on Videos videos
	// (Zipf-like popularity). Repeat is the fraction of events that repeat
	// one of the user's recent videos (inside the dedup window). Of the
	// events, the fraction Likes are like/unlike toggles (the user likes the
	// video if they did not, else takes the like back) and Shares are shares
	// (deduplicated per user and window like views); the rest are views.
	Views  int
	Users  int
	Videos int
	Repeat float64
	Likes  float64
	Shares float64
	// ClientTimeout is how long a client waits for an answer before it
	// fails over to a node of another region and resends.
	ClientTimeout time.Duration

	// Node settings.
	Durability  region.Durability
	DedupWindow time.Duration
	UserRate    float64 // views per second per user before rate limiting
	UserBurst   int
	FsyncMin    time.Duration // a group commit happens this long after the first write that needs it ...
	FsyncMax    time.Duration // ... up to this long (uniform): the fsync latency model
	// CounterCache is the nodes' region.Config.CounterCache (0: no bound):
	// small values evict counters all the time. LogEpoch is the records
	// per counter-log epoch (0: the node's default), small values
	// checkpoint often (and so let counters be evicted).
	CounterCache int
	LogEpoch     int

	// Replication engine settings (replication.Config).
	SyncInterval   time.Duration
	RetryTimeout   time.Duration
	RepairInterval time.Duration
	LogCapacity    int // keys in the change log; small values force digest repair
	Buckets        int // digest buckets
	BatchKeys      int // MaxBatchKeys: keys per delta or repair page
	Inflight       int // MaxInflight: unacknowledged deltas per peer

	// Network faults, per message, during the safety phase. Delay is the
	// mean of the exponential jitter added to each link's base latency.
	Delay   time.Duration
	Loss    float64
	Dup     float64
	Reorder float64 // probability of an extra 0-300ms delay: overtaken by later messages

	// Scheduled faults, as mean events per simulated minute of the safety phase.
	Partitions  float64 // isolate a region, cut one direction, cut a region pair, or clog random links
	Crashes     float64 // one node crashes, restarts 0.5-8s later
	RegionDowns float64 // every node of a region crashes, restarts 3-15s later
	ClockJumps  float64 // one node's clock jumps by up to ±MaxJump
	Stalls      float64 // one node's disk stalls 0.5-4s (fsync hangs)
	Flaps       float64 // membership wrongly declares a live node failed for 1-6s
	// CleanRestarts is the fraction of node crashes that are clean
	// shutdowns instead (Close: everything flushed, async keeps its replica ID).
	CleanRestarts float64
	Skew          time.Duration
	MaxJump       time.Duration

	// Trace prints every fault as it happens.
	Trace bool
}

// DefaultParams are small on purpose: a run takes well under a second, so
// a thousand seeds fit in a few minutes on two cores.
func DefaultParams() Params {
	return Params{
		Seed:           1,
		Regions:        3,
		Nodes:          2,
		Duration:       60 * time.Second,
		ConvergeWithin: 30 * time.Second,
		Views:          3000,
		Users:          300,
		Videos:         20,
		Repeat:         0.2,
		Likes:          0.2,
		Shares:         0.1,
		ClientTimeout:  time.Second,
		Durability:     region.DurabilitySync,
		DedupWindow:    24 * time.Hour,
		UserRate:       1000,
		UserBurst:      1000,
		FsyncMin:       time.Millisecond,
		FsyncMax:       8 * time.Millisecond,
		SyncInterval:   100 * time.Millisecond,
		RetryTimeout:   2 * time.Second,
		RepairInterval: 30 * time.Second,
		LogCapacity:    1 << 20,
		Buckets:        1024,
		BatchKeys:      512,
		Inflight:       8,
		Delay:          5 * time.Millisecond,
		Loss:           0.02,
		Dup:            0.02,
		Reorder:        0.05,
		Partitions:     4,
		Crashes:        3,
		RegionDowns:    0.5,
		ClockJumps:     2,
		Stalls:         2,
		Flaps:          1,
		CleanRestarts:  0.25,
		Skew:           250 * time.Millisecond,
		MaxJump:        2 * time.Second,
	}
}

// NoFaults turns every fault off (scripts and calm baselines).
func (p *Params) NoFaults() {
	p.Loss, p.Dup, p.Reorder = 0, 0, 0
	p.Partitions, p.Crashes, p.RegionDowns, p.ClockJumps, p.Stalls, p.Flaps = 0, 0, 0, 0, 0, 0
	p.Skew, p.MaxJump = 0, 0
}

// Validate reports every invalid field.
func (p Params) Validate() error {
	var errs []error
	check := func(ok bool, format string, a ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, a...))
		}
	}
	check(p.Regions >= 1 && p.Regions <= len(regionNames), "regions %d: want 1..%d", p.Regions, len(regionNames))
	check(p.Nodes >= 1 && p.Nodes <= 9, "nodes %d: want 1..9 per region", p.Nodes)
	check(p.Duration > 0, "duration %v: want > 0", p.Duration)
	check(p.ConvergeWithin > 0, "converge-within %v: want > 0", p.ConvergeWithin)
	check(p.Views >= 0 && p.Users >= 1 && p.Videos >= 1, "views/users/videos %d/%d/%d: want ≥0/≥1/≥1", p.Views, p.Users, p.Videos)
	check(p.Repeat >= 0 && p.Repeat <= 1, "repeat %v: want 0..1", p.Repeat)
	check(p.Likes >= 0 && p.Shares >= 0 && p.Likes+p.Shares <= 1, "likes %v shares %v: want fractions with likes + shares ≤ 1", p.Likes, p.Shares)
	check(p.ClientTimeout > 0, "client-timeout %v: want > 0", p.ClientTimeout)
	check(p.Durability == region.DurabilitySync || p.Durability == region.DurabilityAsync, "durability %q: want sync or async", p.Durability)
	check(p.DedupWindow >= time.Second, "dedup-window %v: want ≥ 1s", p.DedupWindow)
	check(p.UserRate > 0 && p.UserBurst >= 1, "user-rate %v burst %d: want > 0, ≥ 1", p.UserRate, p.UserBurst)
	check(p.CounterCache >= 0 && p.LogEpoch >= 0, "counter-cache %d, log-epoch %d: must not be negative", p.CounterCache, p.LogEpoch)
	check(p.FsyncMin >= 0 && p.FsyncMax >= p.FsyncMin, "fsync %v..%v: want 0 ≤ min ≤ max", p.FsyncMin, p.FsyncMax)
	check(p.SyncInterval > 0 && p.RetryTimeout > 0 && p.RepairInterval > 0, "sync/retry/repair intervals must be > 0")
	check(p.LogCapacity >= 1 && p.BatchKeys >= 1 && p.Inflight >= 1, "log-capacity, batch-keys and inflight must be ≥ 1")
	check(p.Buckets >= 1 && p.Buckets&(p.Buckets-1) == 0, "buckets %d: want a power of two", p.Buckets)
	check(p.CleanRestarts >= 0 && p.CleanRestarts <= 1, "clean-restarts %v: want 0..1", p.CleanRestarts)
	for _, f := range []struct {
		name string
		v    float64
	}{{"loss", p.Loss}, {"dup", p.Dup}, {"reorder", p.Reorder}} {
		check(f.v >= 0 && f.v < 1, "%s %v: want 0 ≤ p < 1", f.name, f.v)
	}
	check(p.Partitions >= 0 && p.Crashes >= 0 && p.RegionDowns >= 0 && p.ClockJumps >= 0 && p.Stalls >= 0 && p.Flaps >= 0, "fault rates must not be negative")
	check(p.Delay >= 0 && p.Skew >= 0 && p.MaxJump >= 0, "delay, skew and max-jump must not be negative")
	if len(errs) > 0 {
		return fmt.Errorf("invalid sim params: %w", errors.Join(errs...))
	}
	return nil
}

// RegisterFlags defines a flag for every field of p, with p's values as defaults.
func (p *Params) RegisterFlags(fs *flag.FlagSet) {
	fs.Uint64Var(&p.Seed, "seed", p.Seed, "seed of the (first) run")
	fs.BoolVar(&p.Swarm, "swarm", p.Swarm, "randomise fault rates, engine limits and cluster shape per seed (swarm testing)")
	fs.IntVar(&p.Regions, "regions", p.Regions, "number of regions")
	fs.IntVar(&p.Nodes, "nodes", p.Nodes, "nodes per region")
	fs.DurationVar(&p.Duration, "duration", p.Duration, "simulated time of workload and faults (safety phase)")
	fs.DurationVar(&p.ConvergeWithin, "converge-within", p.ConvergeWithin, "bound on simulated time from heal to every replica equal to the reference (liveness phase)")
	fs.IntVar(&p.Views, "views", p.Views, "client events (views, shares, likes) sent during the safety phase")
	fs.IntVar(&p.Users, "users", p.Users, "distinct users")
	fs.IntVar(&p.Videos, "videos", p.Videos, "distinct videos")
	fs.Float64Var(&p.Repeat, "repeat", p.Repeat, "`fraction` of events repeating one of the user's recent videos")
	fs.Float64Var(&p.Likes, "likes", p.Likes, "`fraction` of events that are like/unlike toggles")
	fs.Float64Var(&p.Shares, "shares", p.Shares, "`fraction` of events that are shares")
	fs.DurationVar(&p.ClientTimeout, "client-timeout", p.ClientTimeout, "client waits this long for an answer before failing over to another region")
	fs.Func("durability", "sync or async (default sync)", func(s string) error {
		p.Durability = region.Durability(s)
		return nil
	})
	fs.DurationVar(&p.DedupWindow, "dedup-window", p.DedupWindow, "dedup window of the nodes")
	fs.Float64Var(&p.UserRate, "user-rate", p.UserRate, "views per second per user before rate limiting")
	fs.IntVar(&p.UserBurst, "user-burst", p.UserBurst, "burst of --user-rate")
	fs.DurationVar(&p.FsyncMin, "fsync-min", p.FsyncMin, "least delay from a write to the group commit holding it")
	fs.DurationVar(&p.FsyncMax, "fsync-max", p.FsyncMax, "largest delay from a write to the group commit holding it")
	fs.IntVar(&p.CounterCache, "counter-cache", p.CounterCache, "counters a node holds in memory before it evicts clean ones (0: no bound)")
	fs.IntVar(&p.LogEpoch, "log-epoch", p.LogEpoch, "records per counter-log epoch (0: the node's default)")
	fs.DurationVar(&p.SyncInterval, "sync-interval", p.SyncInterval, "replication SyncInterval")
	fs.DurationVar(&p.RetryTimeout, "retry-timeout", p.RetryTimeout, "replication RetryTimeout")
	fs.DurationVar(&p.RepairInterval, "repair-interval", p.RepairInterval, "replication RepairInterval")
	fs.IntVar(&p.LogCapacity, "log-capacity", p.LogCapacity, "replication LogCapacity (keys in the change log)")
	fs.IntVar(&p.Buckets, "buckets", p.Buckets, "replication digest Buckets (a power of two)")
	fs.IntVar(&p.BatchKeys, "batch-keys", p.BatchKeys, "replication MaxBatchKeys")
	fs.IntVar(&p.Inflight, "inflight", p.Inflight, "replication MaxInflight")
	fs.DurationVar(&p.Delay, "delay", p.Delay, "mean exponential jitter added to each message's link latency")
	fs.Float64Var(&p.Loss, "loss", p.Loss, "`probability` a message is lost")
	fs.Float64Var(&p.Dup, "dup", p.Dup, "`probability` a message is delivered twice")
	fs.Float64Var(&p.Reorder, "reorder", p.Reorder, "`probability` a message is held back 0-300ms (reordering)")
	fs.Float64Var(&p.Partitions, "partitions", p.Partitions, "partitions per simulated minute")
	fs.Float64Var(&p.Crashes, "crashes", p.Crashes, "node crashes per simulated minute")
	fs.Float64Var(&p.RegionDowns, "region-downs", p.RegionDowns, "whole-region outages per simulated minute")
	fs.Float64Var(&p.ClockJumps, "clock-jumps", p.ClockJumps, "node clock jumps per simulated minute")
	fs.Float64Var(&p.Stalls, "stalls", p.Stalls, "disk stalls per simulated minute")
	fs.Float64Var(&p.Flaps, "flaps", p.Flaps, "false failure detections per simulated minute")
	fs.Float64Var(&p.CleanRestarts, "clean-restarts", p.CleanRestarts, "`fraction` of crashes that are clean shutdowns")
	fs.DurationVar(&p.Skew, "skew", p.Skew, "largest initial clock skew of a node (±)")
	fs.DurationVar(&p.MaxJump, "max-jump", p.MaxJump, "largest clock jump (±)")
	fs.BoolVar(&p.Trace, "trace", p.Trace, "print every fault as it happens")
}

// fields lists every parameter as name=value, in flag form, for the first
// line of a run and for reproduce commands.
func (p Params) fields() [][2]string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	return [][2]string{
		{"seed", strconv.FormatUint(p.Seed, 10)},
		{"swarm", strconv.FormatBool(p.Swarm)},
		{"regions", strconv.Itoa(p.Regions)},
		{"nodes", strconv.Itoa(p.Nodes)},
		{"duration", fmtDur(p.Duration)},
		{"converge-within", fmtDur(p.ConvergeWithin)},
		{"views", strconv.Itoa(p.Views)},
		{"users", strconv.Itoa(p.Users)},
		{"videos", strconv.Itoa(p.Videos)},
		{"repeat", f(p.Repeat)},
		{"likes", f(p.Likes)},
		{"shares", f(p.Shares)},
		{"client-timeout", fmtDur(p.ClientTimeout)},
		{"durability", string(p.Durability)},
		{"dedup-window", fmtDur(p.DedupWindow)},
		{"user-rate", f(p.UserRate)},
		{"user-burst", strconv.Itoa(p.UserBurst)},
		{"fsync-min", fmtDur(p.FsyncMin)},
		{"fsync-max", fmtDur(p.FsyncMax)},
		{"counter-cache", strconv.Itoa(p.CounterCache)},
		{"log-epoch", strconv.Itoa(p.LogEpoch)},
		{"sync-interval", fmtDur(p.SyncInterval)},
		{"retry-timeout", fmtDur(p.RetryTimeout)},
		{"repair-interval", fmtDur(p.RepairInterval)},
		{"log-capacity", strconv.Itoa(p.LogCapacity)},
		{"buckets", strconv.Itoa(p.Buckets)},
		{"batch-keys", strconv.Itoa(p.BatchKeys)},
		{"inflight", strconv.Itoa(p.Inflight)},
		{"delay", fmtDur(p.Delay)},
		{"loss", f(p.Loss)},
		{"dup", f(p.Dup)},
		{"reorder", f(p.Reorder)},
		{"partitions", f(p.Partitions)},
		{"crashes", f(p.Crashes)},
		{"region-downs", f(p.RegionDowns)},
		{"clock-jumps", f(p.ClockJumps)},
		{"stalls", f(p.Stalls)},
		{"flaps", f(p.Flaps)},
		{"clean-restarts", f(p.CleanRestarts)},
		{"skew", fmtDur(p.Skew)},
		{"max-jump", fmtDur(p.MaxJump)},
	}
}

// String is every parameter as name=value, space separated.
func (p Params) String() string {
	var b strings.Builder
	for i, kv := range p.fields() {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(kv[0] + "=" + kv[1])
	}
	return b.String()
}

// Reproduce is the command that reruns seed with p's settings: every flag
// that differs from its default, in a fixed order. p is the base (pre-swarm)
// parameter set; with Swarm the per-seed values follow from the seed again.
func (p Params) Reproduce(seed uint64) string {
	q := p
	q.Seed = seed
	def := DefaultParams().fields()
	var b strings.Builder
	b.WriteString("tally sim")
	for i, kv := range q.fields() {
		switch {
		case kv[0] == "seed":
			b.WriteString(" --seed " + kv[1])
		case kv[1] == def[i][1]:
		case kv[0] == "swarm":
			b.WriteString(" --swarm")
		default:
			b.WriteString(" --" + kv[0] + "=" + kv[1])
		}
	}
	return b.String()
}

// swarmed returns p with its fault knobs randomised from the seed (swarm
// testing: some seeds see few kinds of fault, hard, others many, lightly).
func (p Params) swarmed() Params {
	if !p.Swarm {
		return p
	}
	r := newRNG(subSeed(p.Seed, "swarm"))
	factor := func() float64 { return []float64{0, 0.5, 1, 2, 4}[r.Intn(5)] }
	p.Loss = min(p.Loss*factor(), 0.3)
	p.Dup = min(p.Dup*factor(), 0.3)
	p.Reorder = min(p.Reorder*factor(), 0.5)
	p.Partitions *= factor()
	p.Crashes *= factor()
	p.RegionDowns *= factor()
	p.ClockJumps *= factor()
	p.Stalls *= factor()
	p.Delay = time.Duration(float64(p.Delay) * []float64{0.2, 1, 5}[r.Intn(3)]).Round(time.Microsecond)
	p.Skew = time.Duration(float64(p.Skew) * []float64{0, 1, 8}[r.Intn(3)])
	p.MaxJump = time.Duration(float64(p.MaxJump) * []float64{0, 1, 4}[r.Intn(3)])
	p.ClientTimeout = []time.Duration{250 * time.Millisecond, p.ClientTimeout, 3 * p.ClientTimeout}[r.Intn(3)]
	if r.Chance(0.2) { // rate limits as a fault: bursts of a user stop counting
		p.UserRate, p.UserBurst = 0.05, 2
	}
	p.Flaps *= factor()
	// Small engine limits drive the paths big ones never reach: a change log
	// that drops keys (digest repair), multi-page repairs, stop-and-wait deltas.
	// Every counted view is also a replicated key (its claim set), so a run
	// has thousands of keys: the smallest limits stay large enough for a
	// full repair of them to fit in the convergence budget over a WAN.
	// (A repair ships every key of a differing bucket: with 4 buckets that
	// is nearly all of them, in pages of BatchKeys, each lost page costing a
	// retry timeout.)
	p.LogCapacity = []int{p.LogCapacity, p.LogCapacity, 64, 16}[r.Intn(4)]
	p.Buckets = []int{p.Buckets, p.Buckets, 16, 4}[r.Intn(4)]
	p.BatchKeys = []int{p.BatchKeys, p.BatchKeys, 64, 32}[r.Intn(4)]
	p.Inflight = []int{p.Inflight, p.Inflight, 2, 1}[r.Intn(4)]
	// Without periodic repair, deltas alone must converge the cluster
	// (repair still runs on joins, restarts and log truncation).
	if r.Chance(0.25) {
		p.RepairInterval = 10 * time.Minute
	}
	// Few nodes relay little: a lost delta is not made good by a third
	// node passing the same state on.
	switch r.Intn(4) {
	case 0:
		p.Regions, p.Nodes = 2, 1
	case 1:
		p.Regions, p.Nodes = min(p.Regions, 3), 1
	}
	// The event mix: likes and shares in every run (unless set to 0), at
	// rates from light to dominant. Drawn last, so that the draws above are
	// those of the runs before likes and shares existed.
	p.Likes = min(p.Likes*[]float64{0.25, 0.5, 1, 2, 3}[r.Intn(5)], 0.6)
	p.Shares = min(p.Shares*[]float64{0.5, 1, 2, 3}[r.Intn(4)], 0.3)
	// Counter eviction: a cache far smaller than the counters a run
	// touches, and counter-log epochs short enough to checkpoint (and so
	// unpin counters) many times a run. Drawn after the mix, for the same
	// reason.
	cache, epoch := []int{0, 0, 8, 32, 128}[r.Intn(5)], []int{0, 2, 8, 64}[r.Intn(4)]
	if p.CounterCache == 0 {
		p.CounterCache = cache
	}
	if p.LogEpoch == 0 {
		p.LogEpoch = epoch
	}
	return p
}

// fmtDur prints d the way flag.Duration parses it, briefly.
func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0 && d >= 10*time.Minute:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	case d%time.Millisecond == 0:
		return strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"
	}
	return d.String()
}

// fmtSec prints a simulated time or span in seconds with millisecond precision.
func fmtSec(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 3, 64) + "s"
}
