package region

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/store"
)

func TestRecordViewCountedThenDuplicate(t *testing.T) {
	clock := newFakeClock(t0)
	rec := &recorder{}
	cfg := testConfig(clock)
	cfg.Observer = rec
	n := openNode(t, cfg)

	if c := views(t, n, "vid"); c != (Count{}) {
		t.Fatalf("Views of an unseen video = %+v, want zero", c)
	}
	if got := n.Stats().Counters; got != 0 {
		t.Errorf("Views of an unseen video cached it: %d counters in memory", got)
	}

	res := record(t, n, View{Video: "vid", User: "alice", ClientMs: t0.UnixMilli() - 5})
	if !res.Counted || res.Fate != store.FateCounted || res.Count != 1 || res.Err != nil {
		t.Fatalf("first view: %+v, want counted with count 1", res)
	}
	res = record(t, n, View{Video: "vid", User: "alice"})
	if res.Counted || res.Fate != store.FateDuplicate || res.Count != 1 {
		t.Fatalf("repeat view: %+v, want duplicate with count 1", res)
	}
	if c := views(t, n, "vid"); c.Value != 1 || !c.LastUpdated.Equal(t0) || c.LastUpdated.Location() != time.UTC {
		t.Fatalf("Views = %+v, want 1 last updated at %v (UTC)", c, t0)
	}

	clock.Advance(90 * time.Second)
	res = record(t, n, View{Video: "vid", User: "bob"})
	if !res.Counted || res.Count != 2 {
		t.Fatalf("another user's view: %+v, want counted with count 2", res)
	}
	if c := views(t, n, "vid"); c.Value != 2 || !c.LastUpdated.Equal(t0.Add(90*time.Second)) {
		t.Fatalf("Views = %+v, want 2 last updated at %v", c, t0.Add(90*time.Second))
	}
	// A duplicate does not move lastUpdated.
	clock.Advance(time.Minute)
	record(t, n, View{Video: "vid", User: "bob"})
	if c := views(t, n, "vid"); c.Value != 2 || !c.LastUpdated.Equal(t0.Add(90*time.Second)) {
		t.Fatalf("Views after a duplicate = %+v", c)
	}
	if c := views(t, n, "other"); c.Value != 0 {
		t.Errorf("Views(other) = %+v, want 0", c)
	}

	if got, want := rec.fate(store.FateCounted), 2; got != want {
		t.Errorf("observed %d counted, want %d", got, want)
	}
	if got, want := rec.fate(store.FateDuplicate), 2; got != want {
		t.Errorf("observed %d duplicates, want %d", got, want)
	}
	st := n.Stats()
	// The total, the hour and day buckets and three minute buckets (the
	// third one resolved for the duplicate and never written).
	if st.Counters != 6 || st.Claims != 2 || st.ReplicaID != n.Identity().Replica || st.Region != "test" || !st.StartedFresh || st.Durability != DurabilitySync {
		t.Errorf("Stats = %+v", st)
	}
	if !n.Ready() || n.Region() != "test" {
		t.Errorf("Ready %v, Region %q", n.Ready(), n.Region())
	}
}

func TestDedupWindowBoundary(t *testing.T) {
	type step struct {
		advance time.Duration
		want    store.Fate
	}
	tests := []struct {
		name   string
		window time.Duration
		start  time.Time
		steps  []step
	}{
		{"24h windows are UTC days", 24 * time.Hour, t0, []step{
			{0, store.FateCounted},
			{22*time.Hour + 59*time.Minute + 59*time.Second + 999*time.Millisecond, store.FateDuplicate}, // 23:59:59.999
			{time.Millisecond, store.FateCounted},                                                        // 00:00 next day
			{23 * time.Hour, store.FateDuplicate},                                                        // 23:00 that day
			{24 * time.Hour, store.FateCounted},                                                          // skipping a whole day
			{-time.Hour, store.FateDuplicate},                                                            // clock stepped back into the same day
			{48 * time.Hour, store.FateCounted},
		}},
		{"1h windows", time.Hour, t0.Add(30 * time.Minute), []step{
			{0, store.FateCounted},
			{29 * time.Minute, store.FateDuplicate},
			{time.Minute, store.FateCounted},
			{59 * time.Minute, store.FateDuplicate},
			{time.Minute, store.FateCounted},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock(tt.start)
			cfg := testConfig(clock)
			cfg.DedupWindow = tt.window
			n := openNode(t, cfg)
			counted := uint64(0)
			for i, st := range tt.steps {
				clock.Advance(st.advance)
				res := record(t, n, View{Video: "v", User: "u"})
				if res.Fate != st.want {
					t.Fatalf("step %d at %v: %v, want %v", i, clock.Now().UTC(), res.Fate, st.want)
				}
				if st.want == store.FateCounted {
					counted++
				}
				if res.Count != counted {
					t.Fatalf("step %d: count %d, want %d", i, res.Count, counted)
				}
			}
			// Only the current and previous windows are kept in memory.
			if c := n.Stats().Claims; c > 2 {
				t.Errorf("%d claims in memory for one (video, user), want ≤ 2", c)
			}
		})
	}
}

func TestUserRateLimit(t *testing.T) {
	clock := newFakeClock(t0)
	rec := &recorder{}
	cfg := testConfig(clock)
	cfg.UserRate, cfg.UserBurst = 1, 2
	cfg.Observer = rec
	n := openNode(t, cfg)

	for i, want := range []store.Fate{store.FateCounted, store.FateCounted, store.FateRateLimited, store.FateRateLimited} {
		res := record(t, n, View{Video: fmt.Sprintf("v%d", i), User: "alice"})
		if res.Fate != want || res.Counted != (want == store.FateCounted) {
			t.Fatalf("view %d: %+v, want %v", i, res, want)
		}
	}
	if c := views(t, n, "v2"); c.Value != 0 {
		t.Fatalf("a rate-limited view was counted: %+v", c)
	}
	// Other users have their own buckets.
	if res := record(t, n, View{Video: "v2", User: "bob"}); !res.Counted {
		t.Fatalf("bob limited by alice's bucket: %+v", res)
	}
	// 1.5 s later one token is back: v2 counts (a rate-limited view left no
	// claim behind), the next does not.
	clock.Advance(1500 * time.Millisecond)
	if res := record(t, n, View{Video: "v2", User: "alice"}); !res.Counted || res.Count != 2 {
		t.Fatalf("after refill: %+v, want counted with count 2", res)
	}
	if res := record(t, n, View{Video: "v4", User: "alice"}); res.Fate != store.FateRateLimited {
		t.Fatalf("second view after one token refilled: %+v, want rate limited", res)
	}
	// A long pause refills the bucket only up to the burst.
	clock.Advance(time.Hour)
	for i, want := range []store.Fate{store.FateCounted, store.FateCounted, store.FateRateLimited} {
		if res := record(t, n, View{Video: fmt.Sprintf("w%d", i), User: "alice"}); res.Fate != want {
			t.Fatalf("after an hour, view %d: %v, want %v", i, res.Fate, want)
		}
	}
	if got := rec.fate(store.FateRateLimited); got != 4 {
		t.Errorf("observed %d rate-limited views, want 4", got)
	}
}

func TestIPRateLimit(t *testing.T) {
	tests := []struct {
		name   string
		ipRate float64
		views  []View
		want   []store.Fate
	}{
		{
			name:   "per-IP limit",
			ipRate: 1,
			views: []View{
				{Video: "v", User: "a", IP: "10.0.0.1"},
				{Video: "v", User: "b", IP: "10.0.0.1"},
				{Video: "v", User: "c", IP: "10.0.0.2"},
				{Video: "v", User: "d"}, // no address: not limited per IP
				{Video: "v", User: "e"},
			},
			want: []store.Fate{store.FateCounted, store.FateRateLimited, store.FateCounted, store.FateCounted, store.FateCounted},
		},
		{
			name:   "off by default",
			ipRate: 0,
			views: []View{
				{Video: "v", User: "a", IP: "10.0.0.1"},
				{Video: "v", User: "b", IP: "10.0.0.1"},
				{Video: "v", User: "c", IP: "10.0.0.1"},
			},
			want: []store.Fate{store.FateCounted, store.FateCounted, store.FateCounted},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock(t0)
			cfg := testConfig(clock)
			cfg.IPRate, cfg.IPBurst = tt.ipRate, 1
			n := openNode(t, cfg)
			counted := uint64(0)
			for i, v := range tt.views {
				res := record(t, n, v)
				if res.Fate != tt.want[i] {
					t.Fatalf("view %d %+v: %v, want %v", i, v, res.Fate, tt.want[i])
				}
				if res.Counted {
					counted++
				}
			}
			if c := views(t, n, "v"); c.Value != counted {
				t.Fatalf("Views = %d, want %d", c.Value, counted)
			}
			if tt.ipRate > 0 {
				clock.Advance(time.Second)
				if res := record(t, n, View{Video: "v", User: "b", IP: "10.0.0.1"}); !res.Counted {
					t.Fatalf("after the IP bucket refilled: %+v", res)
				}
			}
		})
	}
}

func TestInvalidInput(t *testing.T) {
	clock := newFakeClock(t0)
	nowMs := t0.UnixMilli()
	cfg := testConfig(clock)
	cfg.MaxClockSkew = 5 * time.Minute
	cfg.MaxEventAge = time.Hour
	tests := []struct {
		name string
		v    View
		code string // "" means valid
	}{
		{"missing video", View{User: "u"}, CodeInvalidVideoID},
		{"video with a space", View{Video: "a b", User: "u"}, CodeInvalidVideoID},
		{"video with a slash", View{Video: "a/b", User: "u"}, CodeInvalidVideoID},
		{"video with a NUL", View{Video: "a\x00b", User: "u"}, CodeInvalidVideoID},
		{"video too long", View{Video: strings.Repeat("v", MaxIDLen+1), User: "u"}, CodeInvalidVideoID},
		{"non-ASCII video", View{Video: "vidéo", User: "u"}, CodeInvalidVideoID},
		{"missing user", View{Video: "v"}, CodeInvalidUserID},
		{"user too long", View{Video: "v", User: strings.Repeat("u", MaxIDLen+1)}, CodeInvalidUserID},
		{"user with a newline", View{Video: "v", User: "u\n"}, CodeInvalidUserID},
		{"bad video and user", View{Video: "", User: ""}, CodeInvalidVideoID},
		{"timestamp too far ahead", View{Video: "v", User: "u", ClientMs: nowMs + 5*60_000 + 1}, CodeInvalidTimestamp},
		{"timestamp too old", View{Video: "v", User: "u", ClientMs: nowMs - 3_600_000 - 1}, CodeInvalidTimestamp},
		{"negative timestamp", View{Video: "v", User: "u", ClientMs: -1}, CodeInvalidTimestamp},
		{"longest IDs", View{Video: strings.Repeat("v", MaxIDLen), User: strings.Repeat("u", MaxIDLen)}, ""},
		{"all allowed characters", View{Video: "AZaz09_.:-", User: "u"}, ""},
		{"timestamp at the skew bound", View{Video: "v", User: "u1", ClientMs: nowMs + 5*60_000}, ""},
		{"timestamp at the age bound", View{Video: "v", User: "u2", ClientMs: nowMs - 3_600_000}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			cfg := cfg
			cfg.Observer = rec
			n := openNode(t, cfg)
			res, err := n.RecordView(testCtx(t), tt.v)
			if tt.code == "" {
				if err != nil || !res.Counted {
					t.Fatalf("RecordView(valid) = %+v, %v", res, err)
				}
				return
			}
			var ie *InputError
			if !errors.As(err, &ie) || ie.Code != tt.code {
				t.Fatalf("RecordView = %+v, %v; want an *InputError with code %s", res, err, tt.code)
			}
			if !strings.HasPrefix(ie.Error(), tt.code+": ") || ie.Message == "" {
				t.Errorf("error text %q", ie.Error())
			}
			if res != (Result{}) {
				t.Errorf("result of an invalid view = %+v, want zero", res)
			}
			if st := n.Stats(); st.Counters != 0 || st.Claims != 0 || st.RateBuckets != 0 {
				t.Errorf("an invalid view left state behind: %+v", st)
			}
			if rec.fates != nil {
				t.Errorf("an invalid view was ingested: %v", rec.fates)
			}
		})
	}
}

func TestViewsInvalidVideo(t *testing.T) {
	n := openNode(t, testConfig(newFakeClock(t0)))
	for _, video := range []string{"", "a b", strings.Repeat("x", MaxIDLen+1)} {
		var ie *InputError
		if _, err := n.Views(video); !errors.As(err, &ie) || ie.Code != CodeInvalidVideoID {
			t.Errorf("Views(%q): %v, want %s", video, err, CodeInvalidVideoID)
		}
	}
}

func TestRecordViewsBatch(t *testing.T) {
	clock := newFakeClock(t0)
	rec := &recorder{}
	cfg := testConfig(clock)
	cfg.Observer = rec
	n := openNode(t, cfg)
	ctx := testCtx(t)

	batch := []View{
		{Video: "a", User: "u1"},
		{Video: "a", User: "u1"}, // repeat of a claim won in this very batch
		{Video: "", User: "u1"},  // invalid
		{Video: "b", User: "u1"},
		{Video: "a", User: "u2"},
		{Video: "a", User: "bad user"}, // invalid
		{Video: "b", User: "u1"},       // another repeat
	}
	type want struct {
		fate  store.Fate
		count uint64
		code  string
	}
	wants := []want{
		{store.FateCounted, 2, ""},
		{store.FateDuplicate, 2, ""},
		{0, 0, CodeInvalidVideoID},
		{store.FateCounted, 1, ""},
		{store.FateCounted, 2, ""},
		{0, 0, CodeInvalidUserID},
		{store.FateDuplicate, 1, ""},
	}
	check := func(label string, res []Result, wants []want) {
		t.Helper()
		if len(res) != len(wants) {
			t.Fatalf("%s: %d results for %d views", label, len(res), len(wants))
		}
		for i, w := range wants {
			r := res[i]
			if w.code != "" {
				var ie *InputError
				if !errors.As(r.Err, &ie) || ie.Code != w.code || r.Counted || r.Count != 0 {
					t.Errorf("%s: result %d = %+v, want error %s", label, i, r, w.code)
				}
				continue
			}
			if r.Err != nil || r.Fate != w.fate || r.Counted != (w.fate == store.FateCounted) || r.Count != w.count {
				t.Errorf("%s: result %d = %+v, want %v with count %d", label, i, r, w.fate, w.count)
			}
		}
	}

	res, err := n.RecordViews(ctx, batch)
	if err != nil {
		t.Fatalf("RecordViews: %v", err)
	}
	check("first batch", res, wants)

	// The same batch again: everything valid is now a duplicate.
	res, err = n.RecordViews(ctx, batch)
	if err != nil {
		t.Fatalf("RecordViews again: %v", err)
	}
	for i := range wants {
		if wants[i].code == "" {
			wants[i].fate = store.FateDuplicate
		}
	}
	check("repeated batch", res, wants)

	if a, b := views(t, n, "a"), views(t, n, "b"); a.Value != 2 || b.Value != 1 {
		t.Fatalf("Views a=%d b=%d, want 2 and 1", a.Value, b.Value)
	}
	if got := rec.fate(store.FateCounted); got != 3 {
		t.Errorf("observed %d counted, want 3", got)
	}
	if got := rec.fate(store.FateDuplicate); got != 7 {
		t.Errorf("observed %d duplicates, want 7", got)
	}

	// Nothing valid: no error for the batch, nothing ingested.
	res, err = n.RecordViews(ctx, []View{{Video: "", User: "x"}, {Video: "c", User: ""}})
	if err != nil || len(res) != 2 || res[0].Err == nil || res[1].Err == nil {
		t.Fatalf("all-invalid batch: %+v, %v", res, err)
	}
	if res, err := n.RecordViews(ctx, nil); err != nil || len(res) != 0 {
		t.Fatalf("empty batch: %+v, %v", res, err)
	}
}

// A batch of many repeats of a few claims never deadlocks on its own claims.
func TestRecordViewsBatchAllRepeats(t *testing.T) {
	n := openNode(t, testConfig(newFakeClock(t0)))
	var batch []View
	for i := range 200 {
		batch = append(batch, View{Video: fmt.Sprintf("v%d", i%3), User: fmt.Sprintf("u%d", i%2)})
	}
	res, err := n.RecordViews(testCtx(t), batch)
	if err != nil {
		t.Fatal(err)
	}
	counted := 0
	for _, r := range res {
		if r.Counted {
			counted++
		}
	}
	if counted != 6 {
		t.Fatalf("%d of 200 counted, want 6 distinct (video, user) pairs", counted)
	}
}

func TestAsyncCountsLive(t *testing.T) {
	clock := newFakeClock(t0)
	cfg := testConfig(clock)
	cfg.Durability = DurabilityAsync
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		res := record(t, n, View{Video: "v", User: fmt.Sprint("u", i)})
		if !res.Counted || res.Count != uint64(i+1) {
			t.Fatalf("async view %d: %+v, want count %d including unsynced views", i, res, i+1)
		}
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	// Close flushed everything; the durable view now shows all three.
	if c := views(t, n, "v"); c.Value != 3 {
		t.Fatalf("durable count after Close = %d, want 3", c.Value)
	}
}

func TestRecordViewAfterClose(t *testing.T) {
	clock := newFakeClock(t0)
	n, err := Open(testConfig(clock))
	if err != nil {
		t.Fatal(err)
	}
	record(t, n, View{Video: "v", User: "u"})
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// Whatever the path, a view after Close fails as a whole and is not
	// reported counted.
	for _, v := range []View{{Video: "v", User: "u"}, {Video: "v", User: "u2"}, {Video: "new", User: "u"}} {
		res, err := n.RecordView(context.Background(), v)
		if err == nil {
			t.Errorf("RecordView(%+v) after Close = %+v, want an error", v, res)
		}
		if !errors.Is(err, ErrClosed) && !errors.Is(err, ErrUnavailable) {
			t.Errorf("RecordView(%+v) after Close: %v, want ErrClosed or ErrUnavailable", v, err)
		}
	}
}

func TestRecordViewContextCancelled(t *testing.T) {
	// A cancelled context while waiting for durability returns its error; the
	// view may still be counted, and a retry is safe.
	n := openNode(t, testConfig(newFakeClock(t0)))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := n.RecordView(ctx, View{Video: "v", User: "u"})
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("RecordView with a cancelled context: %v", err)
	}
	res := record(t, n, View{Video: "v", User: "u"})
	if res.Count != 1 {
		t.Fatalf("retry: %+v, want count 1 (counted exactly once)", res)
	}
}

func TestOverloaded(t *testing.T) {
	clock := newFakeClock(t0)
	cfg := testConfig(clock)
	cfg.MaxPending = 3 // a view costs two mutations (claim and event)
	n := openNode(t, cfg)
	_, err := n.RecordViews(testCtx(t), []View{{Video: "v", User: "a"}, {Video: "v", User: "b"}})
	if !errors.Is(err, ErrOverloaded) {
		t.Fatalf("a batch of 4 mutations with MaxPending 3: %v, want ErrOverloaded", err)
	}
	if res := record(t, n, View{Video: "w", User: "a"}); !res.Counted {
		t.Fatalf("a single view with MaxPending 3: %+v", res)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
	if err := TestConfig().Validate(); err != nil {
		t.Fatalf("TestConfig: %v", err)
	}
	tests := []struct {
		name  string
		edit  func(*Config)
		field string // a word the error must contain
	}{
		{"empty region", func(c *Config) { c.Region = "" }, "region"},
		{"bad region", func(c *Config) { c.Region = "us east" }, "region"},
		{"long region", func(c *Config) { c.Region = strings.Repeat("r", 129) }, "region"},
		{"no data dir", func(c *Config) { c.DataDir = ""; c.InMemory = false }, "data dir"},
		{"empty durability", func(c *Config) { c.Durability = "" }, "durability"},
		{"bad durability", func(c *Config) { c.Durability = "fsync" }, "durability"},
		{"dedup window too short", func(c *Config) { c.DedupWindow = 999 * time.Millisecond }, "dedup window"},
		{"dedup window zero", func(c *Config) { c.DedupWindow = 0 }, "dedup window"},
		{"dedup window not whole ms", func(c *Config) { c.DedupWindow = time.Hour + time.Microsecond }, "dedup window"},
		{"negative lag budget", func(c *Config) { c.LagBudget = -time.Second }, "lag budget"},
		{"short retention", func(c *Config) { c.EventRetention = 59 * time.Second }, "event retention"},
		{"negative skew", func(c *Config) { c.MaxClockSkew = -time.Second }, "timestamp bounds"},
		{"zero age", func(c *Config) { c.MaxEventAge = 0 }, "timestamp bounds"},
		{"zero user rate", func(c *Config) { c.UserRate = 0 }, "user rate"},
		{"negative user rate", func(c *Config) { c.UserRate = -1 }, "user rate"},
		{"zero user burst", func(c *Config) { c.UserBurst = 0 }, "user rate"},
		{"negative ip rate", func(c *Config) { c.IPRate = -1 }, "ip rate"},
		{"ip rate without burst", func(c *Config) { c.IPRate = 5; c.IPBurst = 0 }, "ip rate"},
		{"few rate limit keys", func(c *Config) { c.RateLimitKeys = 15 }, "rate limit keys"},
		{"zero max pending", func(c *Config) { c.MaxPending = 0 }, "max pending"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.edit(&cfg)
			err := cfg.Validate()
			if err == nil {
				t.Fatal("Validate accepted it")
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("Validate: %v; want it to name %q", err, tt.field)
			}
			if n, err := Open(cfg); err == nil {
				n.Close()
				t.Fatal("Open accepted it")
			}
		})
	}
	// Valid edge values.
	for name, edit := range map[string]func(*Config){
		"in memory without dir": func(c *Config) { c.DataDir = ""; c.InMemory = true },
		"async":                 func(c *Config) { c.Durability = DurabilityAsync },
		"1s window":             func(c *Config) { c.DedupWindow = time.Second },
		"zero lag and skew":     func(c *Config) { c.LagBudget = 0; c.MaxClockSkew = 0 },
		"ip limit on":           func(c *Config) { c.IPRate = 1; c.IPBurst = 1 },
		"16 keys":               func(c *Config) { c.RateLimitKeys = 16 },
		"max pending 1":         func(c *Config) { c.MaxPending = 1 },
	} {
		cfg := DefaultConfig()
		edit(&cfg)
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Every problem is reported, not just the first.
	cfg := DefaultConfig()
	cfg.Region, cfg.MaxPending = "", 0
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "region") || !strings.Contains(err.Error(), "max pending") {
		t.Errorf("two bad fields: %v", err)
	}
}

func TestCheckID(t *testing.T) {
	for _, s := range []string{"a", "A-Z_a.z:0-9", strings.Repeat("x", MaxIDLen)} {
		if err := CheckID(CodeInvalidEvent, "event", s); err != nil {
			t.Errorf("CheckID(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", " ", "a\x00", "é", strings.Repeat("x", MaxIDLen+1)} {
		var ie *InputError
		if err := CheckID(CodeInvalidEvent, "event", s); !errors.As(err, &ie) || ie.Code != CodeInvalidEvent {
			t.Errorf("CheckID(%q): %v", s, err)
		}
	}
}

// counterOf reads the stored state of video's view counter from a closed node's directory.
func counterOf(t *testing.T, dir, video string) crdt.PNCounter {
	t.Helper()
	s, err := store.Open(store.DefaultOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, _, err := s.Counter(crdt.Key{Video: video, Event: EventView})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
