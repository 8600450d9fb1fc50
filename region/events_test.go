package region

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/replication"
)

func like(t *testing.T, n *Node, video, user string) Result {
	t.Helper()
	return record(t, n, View{Video: video, User: user, Event: EventLike})
}

func unlike(t *testing.T, n *Node, video, user string) Result {
	t.Helper()
	return record(t, n, View{Video: video, User: user, Event: EventLike, Unlike: true})
}

func likes(t *testing.T, n *Node, video string) uint64 {
	t.Helper()
	c, err := n.Likes(video)
	if err != nil {
		t.Fatalf("Likes(%q): %v", video, err)
	}
	return c
}

func net(t *testing.T, n *Node, video, event string) int64 {
	t.Helper()
	c, err := n.NetCount(video, event)
	if err != nil {
		t.Fatalf("NetCount(%q, %q): %v", video, event, err)
	}
	return c
}

// seriesTotal is Σ buckets of step over [from, to).
func seriesTotal(t *testing.T, n *Node, video, event string, from, to time.Time, step crdt.Resolution) int64 {
	t.Helper()
	s, err := n.Series(video, event, from, to, step)
	if err != nil {
		t.Fatalf("Series(%s, %s, %s): %v", video, event, step, err)
	}
	var sum int64
	for _, p := range s.Points {
		sum += p.Count
	}
	if sum != s.Total {
		t.Fatalf("Series total %d, Σ points %d", s.Total, sum)
	}
	return s.Total
}

// checkBuckets asserts Σ buckets = total at every resolution over a range
// that covers every event of the test.
func checkBuckets(t *testing.T, n *Node, video, event string, from, to time.Time) {
	t.Helper()
	want := net(t, n, video, event)
	for _, r := range crdt.Resolutions {
		if got := seriesTotal(t, n, video, event, from.Truncate(24*time.Hour), to, r); got != want {
			t.Errorf("%s/%s: Σ %s buckets = %d, total %d", video, event, r, got, want)
		}
	}
}

func TestLikeUnlikeLocal(t *testing.T) {
	clock := newFakeClock(t0)
	n := openNode(t, testConfig(clock))
	steps := []struct {
		op      func(*testing.T, *Node, string, string) Result
		user    string
		changed bool
		count   uint64
	}{
		{like, "a", true, 1},
		{like, "a", false, 1},   // one like per user
		{unlike, "b", false, 1}, // b never liked: nothing to undo
		{like, "b", true, 2},
		{unlike, "a", true, 1},
		{unlike, "a", false, 1}, // never below what the user contributed
		{like, "a", true, 2},    // like again after unlike
		{unlike, "a", true, 1},
		{unlike, "b", true, 0},
		{unlike, "b", false, 0}, // never below zero
	}
	for i, s := range steps {
		clock.Advance(20 * time.Second)
		res := s.op(t, n, "v", s.user)
		if res.Counted != s.changed || res.Count != s.count {
			t.Fatalf("step %d (%s): %+v, want changed %v count %d", i, s.user, res, s.changed, s.count)
		}
	}
	if got := likes(t, n, "v"); got != 0 {
		t.Errorf("Likes = %d, want 0", got)
	}
	if got := net(t, n, "v", EventLike); got != 0 {
		t.Errorf("like counter = %d, want 0", got)
	}
	checkBuckets(t, n, "v", EventLike, t0, clock.Now().Add(time.Minute))
	if st := n.Stats(); st.LikeTransitions != 6 {
		t.Errorf("%d transitions, want 6 (a: 4, b: 2)", st.LikeTransitions)
	}
}

func TestLikesSurviveRestart(t *testing.T) {
	clock := newFakeClock(t0)
	cfg := testConfig(clock)
	cfg.InMemory, cfg.DataDir = false, t.TempDir()
	n := openNode(t, cfg)
	like(t, n, "v", "a")
	like(t, n, "v", "b")
	unlike(t, n, "v", "a")
	record(t, n, View{Video: "v", User: "a"})
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n = openNode(t, cfg)
	if got := likes(t, n, "v"); got != 1 {
		t.Fatalf("Likes after restart = %d, want 1", got)
	}
	if n.Liked("v", "a") || !n.Liked("v", "b") {
		t.Fatalf("after restart: a liked %v, b liked %v; want false, true", n.Liked("v", "a"), n.Liked("v", "b"))
	}
	if res := like(t, n, "v", "a"); !res.Counted || res.Count != 2 {
		t.Fatalf("like again after restart: %+v", res)
	}
	if got, err := n.UniqueViewers("v"); err != nil || got != 1 {
		t.Fatalf("UniqueViewers after restart = %d, %v; want 1", got, err)
	}
}

// Two regions that cannot hear each other take the same user's like: both
// count it (transition 1 in both). Once they meet, the later claim takes its
// like back, and every region agrees: one like, counter and buckets too.
// Then the user unlikes in one region and likes in the other concurrently
// (transitions 2 and 3 against 2): they converge to one answer everywhere.
func TestConcurrentLikesConverge(t *testing.T) {
	clock := newFakeClock(t0)
	b := newBus()
	us := b.join(t, "us-1", openNode(t, regionConfig(clock, "us")))
	eu := b.join(t, "eu-1", openNode(t, regionConfig(clock, "eu")))
	b.rounds(t, clock, 10)

	b.mu.Lock()
	b.cut["us-1"], b.cut["eu-1"] = true, true
	b.mu.Unlock()
	if res := like(t, eu.n, "v", "u"); !res.Counted || res.Count != 1 {
		t.Fatalf("eu like: %+v", res)
	}
	clock.Advance(time.Millisecond)
	if res := like(t, us.n, "v", "u"); !res.Counted || res.Count != 1 {
		t.Fatalf("us like: %+v", res)
	}
	b.mu.Lock()
	clear(b.cut)
	b.mu.Unlock()
	agree := func(want uint64) func() bool {
		return func() bool {
			for _, rn := range []*replicaNode{us, eu} {
				c, _ := rn.n.Likes("v")
				nc, _ := rn.n.NetCount("v", EventLike)
				if c != want || nc != int64(want) {
					return false
				}
			}
			return true
		}
	}
	b.pump(t, clock, func() bool { return us.n.Stats().Compensations == 1 && agree(1)() })
	b.rounds(t, clock, 10)
	if us.n.Stats().Compensations != 1 || eu.n.Stats().Compensations != 0 {
		t.Errorf("compensations us %d eu %d; want 1 and 0 (eu's like was first)", us.n.Stats().Compensations, eu.n.Stats().Compensations)
	}
	for _, rn := range []*replicaNode{us, eu} {
		checkBuckets(t, rn.n, "v", EventLike, t0, clock.Now().Add(time.Minute))
	}

	// Partition again: us unlikes (transition 2); eu unlikes and likes
	// again (transitions 2 and 3).
	b.mu.Lock()
	b.cut["us-1"], b.cut["eu-1"] = true, true
	b.mu.Unlock()
	clock.Advance(time.Second)
	if res := unlike(t, us.n, "v", "u"); !res.Counted || res.Count != 0 {
		t.Fatalf("us unlike: %+v", res)
	}
	clock.Advance(time.Millisecond)
	unlike(t, eu.n, "v", "u")
	like(t, eu.n, "v", "u")
	b.mu.Lock()
	clear(b.cut)
	b.mu.Unlock()
	b.pump(t, clock, func() bool { return us.n.Liked("v", "u") && eu.n.Liked("v", "u") && agree(1)() })
	b.rounds(t, clock, 10)
	if !agree(1)() {
		t.Fatal("likes diverged after settling")
	}
	if !us.n.Liked("v", "u") || !eu.n.Liked("v", "u") {
		t.Fatalf("liked: us %v eu %v; want both true (transition 3 is a like)", us.n.Liked("v", "u"), eu.n.Liked("v", "u"))
	}
	for _, rn := range []*replicaNode{us, eu} {
		checkBuckets(t, rn.n, "v", EventLike, t0, clock.Now().Add(time.Minute))
	}
}

func TestEventTypes(t *testing.T) {
	clock := newFakeClock(t0)
	n := openNode(t, testConfig(clock))
	if res := record(t, n, View{Video: "v", User: "a", Event: "share"}); !res.Counted || res.Count != 1 {
		t.Fatalf("share: %+v", res)
	}
	if res := record(t, n, View{Video: "v", User: "a", Event: "share"}); res.Counted {
		t.Fatalf("second share in the window: %+v, want a duplicate", res)
	}
	// A share does not count as a view (nor dedup one).
	if res := record(t, n, View{Video: "v", User: "a"}); !res.Counted || res.Count != 1 {
		t.Fatalf("view after a share: %+v", res)
	}
	var ie *InputError
	if _, err := n.RecordView(testCtx(t), View{Video: "v", User: "a", Event: "bogus"}); !errors.As(err, &ie) || ie.Code != CodeUnknownEvent {
		t.Fatalf("unknown event: %v, want %s", err, CodeUnknownEvent)
	}
	if _, err := n.RecordView(testCtx(t), View{Video: "v", User: "a", Unlike: true}); !errors.As(err, &ie) || ie.Code != CodeInvalidEvent {
		t.Fatalf("unlike of a view: %v, want %s", err, CodeInvalidEvent)
	}
	if _, err := n.Count("v", "bogus"); !errors.As(err, &ie) || ie.Code != CodeUnknownEvent || !strings.Contains(ie.Message, "share") {
		t.Fatalf("Count of an unknown event: %v", err)
	}
	if got := strings.Join(n.EventTypes(), ","); got != "like,share,view" {
		t.Errorf("EventTypes = %s", got)
	}
	if err := (func() error { c := testConfig(clock); c.EventTypes = []string{"bad/type"}; return c.Validate() })(); err == nil {
		t.Error("an event type with a slash validated")
	}
}

func TestSeries(t *testing.T) {
	clock := newFakeClock(t0)
	n := openNode(t, testConfig(clock))
	// 3 views in minute 0, 2 in minute 2, 1 an hour later.
	for i := range 3 {
		record(t, n, View{Video: "v", User: fmt.Sprint("a", i)})
	}
	clock.Advance(2 * time.Minute)
	record(t, n, View{Video: "v", User: "b0"})
	record(t, n, View{Video: "v", User: "b1"})
	clock.Advance(time.Hour)
	record(t, n, View{Video: "v", User: "c0"})

	s, err := n.Series("v", EventView, t0, t0.Add(5*time.Minute), crdt.Minute)
	if err != nil {
		t.Fatal(err)
	}
	got := []int64{}
	for _, p := range s.Points {
		got = append(got, p.Count)
	}
	if fmt.Sprint(got) != "[3 0 2 0 0]" || s.Total != 5 || !s.From.Equal(t0) || !s.To.Equal(t0.Add(5*time.Minute)) {
		t.Fatalf("minute series %v total %d [%v, %v)", got, s.Total, s.From, s.To)
	}
	if s, err = n.Series("v", EventView, t0, t0.Add(2*time.Hour), crdt.Hour); err != nil || s.Total != 6 || len(s.Points) != 2 || s.Points[0].Count != 5 || s.Points[1].Count != 1 {
		t.Fatalf("hour series %+v, %v", s, err)
	}
	checkBuckets(t, n, "v", EventView, t0, clock.Now().Add(time.Minute))

	var ie *InputError
	for _, c := range []struct {
		from, to time.Time
		step     crdt.Resolution
		code     string
	}{
		{t0.Add(time.Hour), t0, crdt.Minute, CodeInvalidRange},
		{t0, t0, crdt.Hour, CodeInvalidRange},
		{t0.Add(-30 * 24 * time.Hour), t0, crdt.Minute, CodeResolutionNotRetained},
		{t0.Add(-400 * 24 * time.Hour), t0, crdt.Hour, CodeResolutionNotRetained},
		{t0.Add(-30 * 365 * 24 * time.Hour), t0, crdt.Day, CodeTooManyPoints},
		{t0, t0.Add(time.Hour), 0, CodeInvalidStep},
	} {
		_, err := n.Series("v", EventView, c.from, c.to, c.step)
		if !errors.As(err, &ie) || ie.Code != c.code {
			t.Errorf("Series(%v, %v, %v) = %v, want %s", c.from, c.to, c.step, err, c.code)
		}
	}
	_, err = n.Series("v", EventView, t0.Add(-30*24*time.Hour), t0, crdt.Minute)
	if !strings.Contains(err.Error(), "minute buckets for 7d") || !strings.Contains(err.Error(), "day buckets forever") {
		t.Errorf("not-retained error does not say what is kept: %v", err)
	}
	// Day buckets are kept forever: a year-long daily series is fine.
	if _, err := n.Series("v", EventView, t0.Add(-365*24*time.Hour), t0.Add(time.Hour), crdt.Day); err != nil {
		t.Errorf("a year of days: %v", err)
	}
}

// Minute buckets past their retention leave memory and replication; the
// hour and day buckets and the total stay, and a late delta for an expired
// bucket is dropped, not resurrected.
func TestBucketsExpire(t *testing.T) {
	clock := newFakeClock(t0)
	b := newBus()
	cfg := func(r string) Config {
		c := regionConfig(clock, r)
		c.Retention = Retention{Minute: 10 * time.Minute, Hour: 48 * time.Hour}
		c.TopWindows = []TopWindow{{Name: "5m", Res: crdt.Minute, Buckets: 5}, {Name: "24h", Res: crdt.Hour, Buckets: 24}}
		return c
	}
	us := b.join(t, "us-1", openNode(t, cfg("us")))
	eu := b.join(t, "eu-1", openNode(t, cfg("eu")))
	record(t, us.n, View{Video: "v", User: "a"})
	b.pump(t, clock, allShow("v", 1, us, eu))
	minute := crdt.BucketKey{Video: "v", Event: EventView, Res: crdt.Minute, Index: crdt.Minute.Index(t0.UnixMilli())}.Key()
	if us.n.counters.lookup(minute) == nil || eu.n.counters.lookup(minute) == nil {
		t.Fatal("minute bucket not in memory on both nodes")
	}
	clock.Advance(15 * time.Minute)
	record(t, us.n, View{Video: "v", User: "b"}) // ingest sweeps
	b.pump(t, clock, func() bool {
		return us.n.counters.lookup(minute) == nil && eu.n.counters.lookup(minute) == nil && allShow("v", 2, us, eu)()
	})
	// A peer that still sends the expired bucket does not bring it back.
	st := crdt.PNCounter{}
	st.Increment(crdt.ReplicaID(42), 5, t0.UnixMilli())
	r := us.n.repl.Load()
	r.mu.Lock()
	err := us.n.applyEntry(r, replicationApply("eu-1"), replicationEntry(minute, st))
	r.mu.Unlock()
	if err != nil || us.n.counters.lookup(minute) != nil {
		t.Fatalf("late delta for an expired bucket: err %v, in memory %v", err, us.n.counters.lookup(minute) != nil)
	}
	for _, rn := range []*replicaNode{us, eu} {
		for _, res := range []crdt.Resolution{crdt.Hour, crdt.Day} {
			if got := seriesTotal(t, rn.n, "v", EventView, t0.Truncate(24*time.Hour), clock.Now().Add(time.Minute), res); got != 2 {
				t.Errorf("%s: Σ %s buckets = %d, want 2", rn.name, res, got)
			}
		}
	}
}

// A view counted in two regions is compensated in its buckets too, in the
// bucket of the losing claim's ingest time: Σ buckets = total everywhere.
func TestCompensationInBuckets(t *testing.T) {
	clock := newFakeClock(t0)
	b := newBus()
	us := b.join(t, "us-1", openNode(t, regionConfig(clock, "us")))
	eu := b.join(t, "eu-1", openNode(t, regionConfig(clock, "eu")))
	b.rounds(t, clock, 10)
	b.mu.Lock()
	b.cut["us-1"], b.cut["eu-1"] = true, true
	b.mu.Unlock()
	record(t, eu.n, View{Video: "v", User: "u"})
	clock.Advance(3 * time.Minute) // the loser's count lands in another minute
	record(t, us.n, View{Video: "v", User: "u"})
	b.mu.Lock()
	clear(b.cut)
	b.mu.Unlock()
	b.pump(t, clock, allShow("v", 1, us, eu))
	b.rounds(t, clock, 20)
	for _, rn := range []*replicaNode{us, eu} {
		checkBuckets(t, rn.n, "v", EventView, t0, clock.Now().Add(time.Minute))
		s, err := rn.n.Series("v", EventView, t0, t0.Add(5*time.Minute), crdt.Minute)
		if err != nil || s.Points[0].Count != 1 || s.Points[3].Count != 0 {
			t.Errorf("%s minute series %+v, %v: want the view in minute 0 only", rn.name, s.Points, err)
		}
	}
}

func TestUniqueViewersReplicate(t *testing.T) {
	clock := newFakeClock(t0)
	b := newBus()
	us := b.join(t, "us-1", openNode(t, regionConfig(clock, "us")))
	eu := b.join(t, "eu-1", openNode(t, regionConfig(clock, "eu")))
	for i := range 300 {
		rn := us
		if i%2 == 1 {
			rn = eu
		}
		record(t, rn.n, View{Video: "v", User: fmt.Sprint("u", i%200)}) // 200 distinct users
	}
	b.pump(t, clock, func() bool {
		a, _ := us.n.UniqueViewers("v")
		e, _ := eu.n.UniqueViewers("v")
		return a == e && a > 0 && us.n.Stats().SketchChunks == eu.n.Stats().SketchChunks
	})
	got, _ := us.n.UniqueViewers("v")
	if got < 194 || got > 206 { // 0.81% standard error; small sets are nearly exact
		t.Fatalf("UniqueViewers = %d, want ≈ 200", got)
	}
}

func TestTop(t *testing.T) {
	clock := newFakeClock(t0)
	n := openNode(t, testConfig(clock))
	for v, views := range map[string]int{"a": 3, "b": 5, "c": 1} {
		for i := range views {
			record(t, n, View{Video: v, User: fmt.Sprint("u", i)})
		}
	}
	clock.Advance(2 * time.Second) // past the top cache
	top, err := n.Top(EventView, "1h", 2)
	if err != nil || len(top) != 2 || top[0].Video != "b" || top[0].Count != 5 || top[1].Video != "a" {
		t.Fatalf("Top = %+v, %v", top, err)
	}
	clock.Advance(2 * time.Hour)
	if top, err = n.Top(EventView, "1h", 2); err != nil || len(top) != 0 {
		t.Fatalf("Top an hour later = %+v, %v; want nothing", top, err)
	}
	if top, err = n.Top(EventView, "24h", 3); err != nil || len(top) != 3 {
		t.Fatalf("Top 24h = %+v, %v", top, err)
	}
	var ie *InputError
	if _, err := n.Top(EventView, "5m", 2); !errors.As(err, &ie) || ie.Code != CodeInvalidWindow || !strings.Contains(ie.Message, "1h") {
		t.Fatalf("unknown window: %v", err)
	}
	if _, err := n.Top(EventView, "1h", 0); !errors.As(err, &ie) || ie.Code != CodeInvalidK {
		t.Fatalf("k = 0: %v", err)
	}
}

func replicationApply(from string) replication.Apply {
	return replication.Apply{From: replication.NodeID(from)}
}

func replicationEntry(k crdt.Key, st crdt.PNCounter) replication.Entry {
	return replication.Entry{Key: k, State: st}
}

// TestBucketsAcrossRestart: a bucket written before a restart keeps its
// count when the node writes to it again: in the same minute, and after the
// clock went back at the restart and then caught up with the bucket (the
// node reads from disk every bucket not newer than the newest it stored).
func TestBucketsAcrossRestart(t *testing.T) {
	clock := newFakeClock(t0.Add(10 * time.Minute))
	cfg := testConfig(clock)
	cfg.InMemory, cfg.DataDir = false, t.TempDir()
	n := openNode(t, cfg)
	record(t, n, View{Video: "v", User: "a"})
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	clock.Set(t0) // the clock is 10 minutes behind after the restart
	n = openNode(t, cfg)
	record(t, n, View{Video: "v", User: "b"})
	clock.Set(t0.Add(10*time.Minute + time.Second))
	record(t, n, View{Video: "v", User: "c"})
	clock.Advance(time.Minute)
	record(t, n, View{Video: "v", User: "d"})
	s, err := n.Series("v", EventView, t0, t0.Add(12*time.Minute), crdt.Minute)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int]int64{}
	for i, p := range s.Points {
		if p.Count != 0 {
			got[i] = p.Count
		}
	}
	if fmt.Sprint(got) != "map[0:1 10:2 11:1]" || s.Total != 4 {
		t.Fatalf("minute buckets %v, total %d; want minute 10 to hold the view from before the restart too", got, s.Total)
	}
	checkBuckets(t, n, "v", EventView, t0, clock.Now().Add(time.Minute))
}

// TestTrioCache: a total's buckets are remembered for the minute they were
// resolved in, and resolved again, from the counter table, in the next
// minute or once one of them has left the table: the counts land in the
// entries the table holds, never in one it dropped.
func TestTrioCache(t *testing.T) {
	clock := newFakeClock(t0)
	n := openNode(t, testConfig(clock))
	record(t, n, View{Video: "v", User: "a"})
	total, err := n.entry(crdt.Key{Video: "v", Event: EventView})
	if err != nil {
		t.Fatal(err)
	}
	inTable := func(entries [3]*counterEntry) {
		t.Helper()
		for i, b := range crdt.BucketsOf("v", EventView, clock.Now().UnixMilli()) {
			if e, _ := n.counters.find(n.counters.bucketKey(b)); e != entries[i] {
				t.Fatalf("bucket %v: resolved %p, the table holds %p", b, entries[i], e)
			}
		}
	}
	first, err := n.bucketEntries(total, "v", EventView, clock.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	inTable(first)
	if again, _ := n.bucketEntries(total, "v", EventView, clock.Now().UnixMilli()); again != first {
		t.Fatalf("same minute: %v, want the remembered %v", again, first)
	}

	// One of them leaves the table (as an expired or evicted bucket does;
	// this one is neither, so its count of 1 is not on disk to read back:
	// the test checks where counts land, not what a dropped entry held).
	minuteKey := first[0].key
	if n.counters.remove(func(k crdt.Key) bool { return k == minuteKey }) != 1 {
		t.Fatal("the minute bucket was not removed")
	}
	record(t, n, View{Video: "v", User: "b"})
	second, err := n.bucketEntries(total, "v", EventView, clock.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	inTable(second)
	if second[0] == first[0] {
		t.Fatal("the removed minute bucket is still resolved")
	}

	// The next minute has buckets of its own.
	clock.Advance(time.Minute)
	record(t, n, View{Video: "v", User: "c"})
	third, err := n.bucketEntries(total, "v", EventView, clock.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	inTable(third)
	if third[0] == second[0] || third[1] != second[1] || third[2] != second[2] {
		t.Fatalf("next minute: %v after %v, want a new minute bucket, the same hour and day", third, second)
	}
	if c := views(t, n, "v"); c.Value != 3 {
		t.Fatalf("count %d, want 3", c.Value)
	}
	for i, want := range []uint64{1, 3, 3} { // the new minute: 1; its hour and day: all three
		if got := third[i].view.Load().value; got != want {
			t.Fatalf("bucket %d of the next minute holds %d, want %d", i, got, want)
		}
	}
}
