package region

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/store"
)

// Durability says when a write is acknowledged.
type Durability string

// Durability modes.
const (
	// DurabilitySync acknowledges a write after the batch holding it is fsynced.
	DurabilitySync Durability = "sync"
	// DurabilityAsync acknowledges before fsync. A crash may lose the unsynced
	// tail, so after an unclean shutdown the node takes a new replica ID and
	// never reuses a slot value it might have lost.
	DurabilityAsync Durability = "async"
)

// Config configures a Node. Build one with DefaultConfig and change fields.
type Config struct {
	// Region names the region this node serves, e.g. "us-east".
	Region string
	// DataDir is where Badger keeps its files. Ignored when InMemory is set.
	DataDir string
	// InMemory keeps all state in RAM; for tests. Nothing survives Close.
	InMemory bool
	// Durability: DurabilitySync (default) or DurabilityAsync.
	Durability Durability
	// DedupWindow is the span in which one user's views of one video count
	// once. Windows are aligned to the Unix epoch, so 24 h means UTC days.
	DedupWindow time.Duration
	// LagBudget is how long after its window a claim is kept, so that late
	// replication cannot resurrect a view as new. The seeds allow 10 minutes.
	LagBudget time.Duration
	// EventRetention is how long the raw event log keeps an event.
	EventRetention time.Duration
	// MaxClockSkew is how far in the future a client timestamp may be.
	MaxClockSkew time.Duration
	// MaxEventAge is how far in the past a client timestamp may be.
	MaxEventAge time.Duration
	// UserRate is the sustained views per second one user may make (token
	// bucket refill); views over it are not counted ("rate_limited").
	UserRate float64
	// UserBurst is the bucket size of UserRate, in views.
	UserBurst int
	// IPRate and IPBurst limit views per client IP the same way; 0 disables.
	// Off by default: NATs and proxies put many users behind one address.
	IPRate  float64
	IPBurst int
	// Deny lists users and client addresses whose views are never counted
	// (click farms, known bots): logged with fate "denied". Nil denies none.
	Deny *DenyList
	// RateLimitKeys bounds the users and IPs tracked by each rate limiter
	// (memory bound): half in first-seen records, half in buckets; the least
	// recently seen are forgotten first.
	RateLimitKeys int
	// MaxPending bounds the writes waiting for the next group commit; beyond
	// it ingest fails with ErrOverloaded (HTTP 503) instead of growing memory.
	MaxPending int
	// EventTypes lists the event types the node counts besides "view" and
	// "like" (which it always counts), e.g. "share". Every type is counted
	// once per user, video and DedupWindow, like views; likes instead follow
	// the like/unlike rules (see likes.go).
	EventTypes []string
	// Retention is how long time buckets of each resolution are kept: by
	// default minute buckets 7 days, hour buckets 1 year, day buckets
	// forever (0).
	Retention Retention
	// DisableTimeBuckets turns time buckets off: events are counted in their
	// totals only, and series and trending answer an error. It saves the
	// memory and writes of three buckets per counter and minute.
	DisableTimeBuckets bool
	// CounterCache bounds the counters (totals and time buckets) held in
	// memory; 0 holds every counter touched since start. Beyond it, each
	// group commit evicts clean counters, least recently used first
	// (roughly), and the next use reads one back from Badger. Counters the
	// counter log holds and has not checkpointed yet stay until it has, so
	// a node may hold more for a while.
	CounterCache int
	// TopWindows are the windows GET /v1/top serves (DefaultTopWindows if nil).
	TopWindows []TopWindow
	// Logger receives the node's structured logs. Nil discards them.
	Logger *slog.Logger
	// Clock returns the current time. Nil means time.Now; the simulator sets it.
	Clock func() time.Time
	// Observer, if set, receives the node's measurements (metrics).
	Observer Observer

	// The fields below exist for the deterministic simulator.

	// Store, if set, is an already open store the node uses instead of
	// opening DataDir; the node does not close it. A node abandoned without
	// Close models a crash: what it never committed is lost.
	Store *store.Store
	// CounterLogEpoch is how many records a counter-log epoch writes before
	// it is checkpointed (0: the default, about 16 MB of log); small values
	// checkpoint often.
	CounterLogEpoch int
	// ManualCommit runs the group committer without a goroutine: batches
	// are written only by Node.StepCommit. Use SubmitViews, not RecordViews
	// (which would wait forever for a batch nobody writes).
	ManualCommit bool
}

// Retention is how long the time buckets of each resolution are kept; 0 keeps
// them forever.
type Retention struct {
	Minute, Hour, Day time.Duration
}

// Of returns the retention of resolution r.
func (r Retention) Of(res crdt.Resolution) time.Duration {
	switch res {
	case crdt.Minute:
		return r.Minute
	case crdt.Hour:
		return r.Hour
	default:
		return r.Day
	}
}

// DefaultRetention keeps minute buckets 7 days, hour buckets a year (365
// days) and day buckets forever, as the seeds' downsampling asks.
var DefaultRetention = Retention{Minute: 7 * 24 * time.Hour, Hour: 365 * 24 * time.Hour}

// DefaultEventTypes are the event types counted besides views and likes.
var DefaultEventTypes = []string{"share"}

// DefaultCounterCache is the default CounterCache: four million counters,
// a million videos' totals and time buckets, about 700 MB.
const DefaultCounterCache = 4_000_000

// DefaultConfig returns the production defaults for a node in region "local"
// with its data in ./data.
func DefaultConfig() Config {
	return Config{
		Region:         "local",
		DataDir:        "data",
		Durability:     DurabilitySync,
		DedupWindow:    24 * time.Hour,
		LagBudget:      10 * time.Minute,
		EventRetention: 7 * 24 * time.Hour,
		MaxClockSkew:   5 * time.Minute,
		MaxEventAge:    7 * 24 * time.Hour,
		UserRate:       10,
		UserBurst:      50,
		RateLimitKeys:  1 << 20,
		MaxPending:     1_000_000,
		CounterCache:   DefaultCounterCache,
		EventTypes:     DefaultEventTypes,
		Retention:      DefaultRetention,
	}
}

// TestConfig is DefaultConfig in memory, for tests.
func TestConfig() Config {
	c := DefaultConfig()
	c.InMemory = true
	c.DataDir = ""
	return c
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, a ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, a...))
		}
	}
	check(validID(c.Region), "region %q: want 1-128 bytes of [A-Za-z0-9_.:-]", c.Region)
	check(c.InMemory || c.DataDir != "" || c.Store != nil, "data dir: required unless in memory")
	check(c.Durability == DurabilitySync || c.Durability == DurabilityAsync, "durability %q: want sync or async", c.Durability)
	check(c.DedupWindow >= time.Second && c.DedupWindow%time.Millisecond == 0, "dedup window %v: want at least 1s, whole milliseconds", c.DedupWindow)
	check(c.LagBudget >= 0, "lag budget %v: must not be negative", c.LagBudget)
	check(c.EventRetention >= time.Minute, "event retention %v: want at least 1m", c.EventRetention)
	check(c.MaxClockSkew >= 0 && c.MaxEventAge > 0, "timestamp bounds: skew %v and age %v must be positive", c.MaxClockSkew, c.MaxEventAge)
	check(c.UserRate > 0 && c.UserBurst >= 1, "user rate %v/s burst %d: want > 0 and ≥ 1", c.UserRate, c.UserBurst)
	check(c.IPRate >= 0 && (c.IPRate == 0 || c.IPBurst >= 1), "ip rate %v/s burst %d: want 0 (off) or > 0 with burst ≥ 1", c.IPRate, c.IPBurst)
	check(c.RateLimitKeys >= 16, "rate limit keys %d: want at least 16", c.RateLimitKeys)
	check(c.MaxPending >= 1, "max pending %d: want at least 1", c.MaxPending)
	check(c.CounterCache >= 0, "counter cache %d: want 0 (no bound) or more", c.CounterCache)
	check(c.CounterLogEpoch >= 0, "counter log epoch %d: want 0 (default) or more", c.CounterLogEpoch)
	seen := map[string]bool{EventView: true, EventLike: true, "unlike": true}
	for _, ev := range c.EventTypes {
		check(validID(ev) && len(ev) <= MaxEventLen, "event type %q: want 1-%d bytes of [A-Za-z0-9_.:-]", ev, MaxEventLen)
		check(!seen[ev] || ev == EventView || ev == EventLike, "event type %q: listed twice", ev)
		seen[ev] = true
	}
	r := c.Retention
	for _, res := range crdt.Resolutions {
		d := r.Of(res)
		check(d == 0 || d >= 2*res.Duration(), "%s retention %v: want 0 (forever) or at least two %ss", res, d, res)
	}
	check((r.Hour == 0 || r.Minute != 0 && r.Minute <= r.Hour) && (r.Day == 0 || r.Hour != 0 && r.Hour <= r.Day),
		"retention minute %v, hour %v, day %v: a coarser resolution must be kept at least as long (0 = forever)", r.Minute, r.Hour, r.Day)
	names := map[string]bool{}
	windows := c.TopWindows
	if windows == nil && !c.DisableTimeBuckets {
		windows = DefaultTopWindows
	}
	for _, w := range windows {
		check(w.Name != "" && w.Buckets >= 1 && w.Res >= crdt.Minute && w.Res <= crdt.Day, "top window %q: want a name, a resolution and at least one bucket", w.Name)
		check(!names[w.Name], "top window %q: listed twice", w.Name)
		keep := r.Of(w.Res)
		check(keep == 0 || time.Duration(w.Buckets)*w.Res.Duration() <= keep, "top window %q: %d %s buckets reach back further than their retention %v", w.Name, w.Buckets, w.Res, keep)
		names[w.Name] = true
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid config: %w", errors.Join(errs...))
	}
	return nil
}
