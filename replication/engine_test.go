package replication

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tallyhq/tally/crdt"
)

const step = 50 * time.Millisecond

func instantNet() netConfig { return netConfig{} }

// chooser draws the choices of a random scenario: from rapid (which shrinks
// a failure to a small case) or from a seeded PCG (for long soaks).
type chooser interface {
	intn(name string, n int) int // in [0, n)
}

type rapidChooser struct{ t *rapid.T }

func (r rapidChooser) intn(name string, n int) int { return rapid.IntRange(0, n-1).Draw(r.t, name) }

type rngChooser struct{ c *cluster }

func (r rngChooser) intn(_ string, n int) int { return r.c.rng.IntN(n) }

func pick[T any](ch chooser, name string, xs ...T) T { return xs[ch.intn(name, len(xs))] }

// scenarioConfig draws a cluster's configuration, network and size.
func scenarioConfig(ch chooser) (int, Config, netConfig) {
	n := 2 + ch.intn("nodes", 3)
	net := netConfig{
		drop:     pick(ch, "drop", 0, 0.05, 0.2, 0.4),
		dup:      pick(ch, "dup", 0, 0.1, 0.3),
		minDelay: time.Millisecond,
		maxDelay: pick(ch, "maxDelay", 2*time.Millisecond, 100*time.Millisecond, 700*time.Millisecond),
	}
	cfg := testConfig()
	cfg.LogCapacity = pick(ch, "logCapacity", 3, 20, 4096)
	cfg.MaxBatchKeys = 1 + ch.intn("maxBatchKeys", 8)
	cfg.MaxInflight = 1 + ch.intn("maxInflight", 4)
	cfg.RepairWindow = 1 + ch.intn("repairWindow", 3)
	cfg.Buckets = pick(ch, "buckets", 1, 4, 64)
	return n, cfg, net
}

// scenario runs ops random operations: increments at random nodes, time
// passing, partitions (any subset of links, so A–C may be cut while A–B and
// B–C are up), heals, crashes, restarts with state kept and, if wipes, disk
// losses. Then it heals, restarts every node that is down, and requires
// convergence within three simulated minutes.
func scenario(c *cluster, ch chooser, ops int, wipes bool) {
	n := len(c.nodes)
	for range ops {
		switch op := ch.intn("op", 13); {
		case op <= 4:
			if i := ch.intn("at", n); c.nodes[i].up {
				c.incr(i, key(ch.intn("key", 25)), uint64(1+ch.intn("n", 3)))
			}
		case op <= 7:
			c.run(time.Duration(1+ch.intn("ticks", 40)) * step)
		case op == 8:
			if a, b := ch.intn("a", n), ch.intn("b", n); a != b {
				c.partition(a, b)
			}
		case op == 9:
			c.heal()
		case op == 10:
			c.nodes[ch.intn("crash", n)].up = false
		case op == 11:
			c.restart(ch.intn("restart", n), false)
		case op == 12:
			if wipes {
				c.restart(ch.intn("wipe", n), true)
			}
		}
	}
	c.heal()
	for i, nd := range c.nodes {
		if !nd.up {
			c.restart(i, false)
		}
	}
	c.settle(step, 3*time.Minute)
	c.repairsLive(4 * c.cfg.RepairInterval)
	if !c.converged() {
		c.t.Fatalf("diverged after settling\n%s", c.report())
	}
}

// TestConvergenceProperty: whatever rapid draws (cluster size, config,
// network faults, operations), a healed cluster converges on the true totals.
func TestConvergenceProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		ch := rapidChooser{rt}
		n, cfg, net := scenarioConfig(ch)
		c := newCluster(rt, uint64(ch.intn("seed", 1<<30)), n, cfg, net)
		scenario(c, ch, 1+ch.intn("ops", 80), true)
	})
}

// TestConvergenceSoak: longer seeded scenarios, disk losses included. The
// first log line gives the seed; a failure names it.
func TestConvergenceSoak(t *testing.T) {
	seeds := 12
	if testing.Short() {
		seeds = 4
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			c := newCluster(t, seed, 1, testConfig(), netConfig{}) // only its rng, to draw the scenario
			ch := rngChooser{c}
			n, cfg, net := scenarioConfig(ch)
			c = newCluster(t, seed, n, cfg, net)
			ch = rngChooser{c}
			scenario(c, ch, 600, true)
			t.Logf("seed %d: %d nodes, drop %.2f dup %.2f delay ≤%v, log %d, %d keys: sent %d, dropped %d, %d bytes, refused %v",
				seed, n, net.drop, net.dup, net.maxDelay, cfg.LogCapacity, len(c.truth), c.sent, c.dropped, c.bytes, c.refused)
		})
	}
}

// TestTransitiveSpread: with A–C cut for good but A–B and B–C up, A's and
// C's increments still reach each other through B.
func TestTransitiveSpread(t *testing.T) {
	for seed := range uint64(5) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			c := newCluster(t, seed, 3, testConfig(), lossyNet())
			c.partition(0, 2)
			for i := range 60 {
				c.incr([]int{0, 2}[i%2], key(i%20), 1)
				c.advance(step)
			}
			c.settleWhen(step, time.Minute, c.converged)
			if st := c.nodes[0].eng.Status(c.now); st.Peers[1].Cursor != 0 {
				t.Errorf("a's cursor for c is %d though they never talked", st.Peers[1].Cursor)
			}
		})
	}
}

// TestLogTruncationForcesRepair: a peer that was away while more keys
// changed than the log holds is repaired by digest, and converges.
func TestLogTruncationForcesRepair(t *testing.T) {
	cfg := testConfig()
	cfg.LogCapacity = 8
	c := newCluster(t, 7, 2, cfg, lossyNet())
	c.settle(step, time.Minute)
	c.partition(0, 1)
	for i := range 100 {
		c.incr(0, key(i), 1)
	}
	c.run(time.Second)
	a := c.nodes[0].eng.Status(c.now)
	if a.LogStart == 0 || a.LogKeys != 8 {
		t.Fatalf("log start %d, %d keys in log; want truncation to 8", a.LogStart, a.LogKeys)
	}
	if a.Peers[0].Cursor >= a.LogStart {
		t.Fatalf("cursor %d not behind log start %d", a.Peers[0].Cursor, a.LogStart)
	}
	before := a.Peers[0].Repairs
	c.heal()
	took := c.settle(step, time.Minute)
	if after := c.nodes[0].eng.Status(c.now).Peers[0].Repairs; after <= before {
		t.Errorf("repairs %d → %d: the cursor fell out of the log, yet no repair completed", before, after)
	}
	t.Logf("repaired 100 keys past a log of 8 in %v", took)
}

// TestRestartKeepsState: a node restarts (new engine, new epoch, state kept,
// keys loaded), peers reset its cursor and repair; all converge.
func TestRestartKeepsState(t *testing.T) {
	c := newCluster(t, 3, 3, testConfig(), lossyNet())
	for i := range 50 {
		c.incr(i%3, key(i), 2)
	}
	c.settle(step, time.Minute)
	old := c.nodes[1].eng.Config().Epoch
	c.restart(1, false)
	for i := range 50 {
		c.incr(i%3, key(i+25), 1)
	}
	c.settle(step, time.Minute)
	for _, i := range []int{0, 2} {
		for _, p := range c.nodes[i].eng.Status(c.now).Peers {
			if p.Peer == "b" && (p.Epoch == old || p.Epoch != c.nodes[1].eng.Config().Epoch) {
				t.Errorf("%s still knows b as epoch %x", c.nodes[i].id, p.Epoch)
			}
		}
	}
}

// TestLostStateConverges: a node loses its disk (empty state, new replica,
// new epoch) and gets everything back from its peers.
func TestLostStateConverges(t *testing.T) {
	c := newCluster(t, 4, 3, testConfig(), lossyNet())
	for i := range 80 {
		c.incr(i%3, key(i%40), 1)
	}
	c.settle(step, time.Minute)
	c.restart(2, true)
	if len(c.nodes[2].states) != 0 {
		t.Fatal("wipe kept state")
	}
	c.incr(2, key(1), 5) // under its new replica ID
	took := c.settle(step, time.Minute)
	t.Logf("wiped node caught up in %v", took)
}

// TestRestartWithSmallerEpoch: with random epochs a restart may draw a
// smaller one; peers take it for a delayed message of the dead incarnation
// only until that has been silent for 4·RetryTimeout, then converge.
func TestRestartWithSmallerEpoch(t *testing.T) {
	c := newCluster(t, 11, 3, testConfig(), lossyNet())
	for i := range 30 {
		c.incr(i%3, key(i), 1)
	}
	c.settle(step, time.Minute)
	c.nextEpoch = 5 // far below the first incarnation's
	c.restart(1, false)
	for i := range 30 {
		c.incr(i%3, key(i), 1)
	}
	c.settle(step, time.Minute)
	if c.refused["stale-epoch"] == 0 {
		t.Error("the smaller epoch was never refused: test does not test")
	}
	for _, i := range []int{0, 2} {
		if p := c.nodes[i].eng.Status(c.now).Peers; p[0].Peer == "b" && p[0].Epoch != 5 {
			t.Errorf("%s knows b as epoch %x", c.nodes[i].id, p[0].Epoch)
		}
	}
}

// TestPeerForgetsMidRepair: the responder drops and re-adds the initiator in
// the middle of a repair (membership flap); the initiator notices the lack
// of progress, starts afresh, and both converge.
func TestPeerForgetsMidRepair(t *testing.T) {
	cfg := testConfig()
	cfg.MaxBatchKeys = 2
	cfg.RepairWindow = 1
	c := newCluster(t, 12, 2, cfg, netConfig{minDelay: 20 * time.Millisecond, maxDelay: 20 * time.Millisecond})
	for i := range 60 {
		c.nodes[0].states[key(i)] = crdt.PNCounter{P: crdt.NewGCounter(crdt.Slot{Replica: 7, Count: uint64(i + 1), Updated: 1})}
		c.nodes[1].states[key(i)] = crdt.PNCounter{P: crdt.NewGCounter(crdt.Slot{Replica: 8, Count: uint64(i + 1), Updated: 1})}
	}
	c.restart(0, false)
	c.restart(1, false)
	for _, nd := range c.nodes {
		for k, st := range nd.states {
			tr := c.truth[k].Clone()
			tr.Merge(st)
			c.truth[k] = tr
		}
	}
	// Interrupt a while it receives b's reply (b alone then holds the
	// exchange's state).
	for range 100 {
		if s := c.nodes[0].eng.peers["b"].session; s != nil && s.diff != nil && s.out == nil {
			break
		}
		c.advance(10 * time.Millisecond)
	}
	if s := c.nodes[0].eng.peers["b"].session; s == nil || s.diff == nil || s.out != nil {
		t.Fatal("a never received b's reply page by page")
	}
	c.nodes[1].eng.RemovePeer("a")
	c.nodes[1].eng.AddPeer(c.now, "a")
	took := c.settle(step, time.Minute)
	c.repairsLive(3 * cfg.RepairInterval)
	t.Logf("converged %v after the flap", took)
}

// TestNoEchoBack: a change merged from a peer (ChangedFrom) is not shipped
// back to it, nor is a key whose repair page it acknowledged.
func TestNoEchoBack(t *testing.T) {
	c := newCluster(t, 13, 2, testConfig(), lossyNet())
	c.settle(step, time.Minute)
	c.capture = true
	for i := range 100 {
		c.incr(0, key(i%30), 1)
		c.advance(step)
	}
	c.settle(step, time.Minute)
	back := 0
	for _, m := range c.captured {
		if m.From == "b" {
			back += len(m.Entries)
		}
	}
	if back != 0 {
		t.Errorf("b shipped %d entries back to a, which wrote them all", back)
	}
}

// TestMixedBucketCounts: peers configured with different digest sizes still
// repair each other (the larger side folds).
func TestMixedBucketCounts(t *testing.T) {
	c := newCluster(t, 5, 2, testConfig(), lossyNet())
	cfg := testConfig()
	cfg.Buckets = 256
	c.cfg = cfg
	c.restart(1, false)
	for i := range 40 {
		c.nodes[0].states[key(i)] = crdt.PNCounter{P: crdt.NewGCounter(crdt.Slot{Replica: 9, Count: uint64(i + 1), Updated: 1})}
		c.nodes[1].states[key(i+20)] = crdt.PNCounter{P: crdt.NewGCounter(crdt.Slot{Replica: 8, Count: uint64(i + 1), Updated: 1})}
	}
	for i := range c.nodes { // keys loaded, not logged: only repair can move them
		c.restart(i, false)
	}
	for _, nd := range c.nodes {
		for k, st := range nd.states {
			tr := c.truth[k].Clone()
			tr.Merge(st)
			c.truth[k] = tr
		}
	}
	c.settle(step, time.Minute)
}

// TestRepairEqualDigests: when digests agree, a repair costs the digest and
// one empty reply page, and no state travels.
func TestRepairEqualDigests(t *testing.T) {
	c := newCluster(t, 6, 2, testConfig(), instantNet())
	for i := range 100 {
		c.incr(i%2, key(i), 1)
	}
	c.settle(step, time.Minute)
	c.capture = true
	before := c.nodes[0].eng.Status(c.now).Peers[0].Repairs
	c.run(c.cfg.RepairInterval)
	var digests, pages int
	for _, m := range c.captured {
		switch m.Kind {
		case KindDigest:
			digests++
		case KindRepairData:
			pages++
			if len(m.Entries) != 0 || len(m.Buckets) != 0 || !m.Reply || !m.Final {
				t.Errorf("equal digests, yet %s", describe(&m))
			}
		case KindRepairAck:
			t.Errorf("equal digests, yet %s", describe(&m))
		case KindDelta:
			if len(m.Entries) != 0 {
				t.Errorf("quiet cluster sent %s", describe(&m))
			}
		}
	}
	// Both sides open a repair at the same moment; the larger ID yields, so
	// one session (one reply page) serves both directions.
	if digests != 2 || pages != 1 {
		t.Errorf("%d digests, %d reply pages; want 2 and 1", digests, pages)
	}
	if after := c.nodes[0].eng.Status(c.now).Peers[0].Repairs; after != before+1 {
		t.Errorf("repairs %d → %d, want one more", before, after)
	}
}

// TestRepairPaging: a repair between peers that differ completely pages
// within MaxBatchKeys and MaxBatchBytes, and so do deltas.
func TestRepairPaging(t *testing.T) {
	for _, tc := range []struct {
		name  string
		keys  int
		bytes int
	}{{"keys", 7, 256 << 10}, {"bytes", 512, 300}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.MaxBatchKeys = tc.keys
			cfg.MaxBatchBytes = tc.bytes
			c := newCluster(t, 8, 2, cfg, lossyNet())
			for i := range 300 {
				c.nodes[i%2].states[key(i)] = crdt.PNCounter{P: crdt.NewGCounter(crdt.Slot{Replica: crdt.ReplicaID(i%2 + 1), Count: 1, Updated: 1})}
			}
			c.restart(0, false)
			c.restart(1, false)
			for _, nd := range c.nodes {
				for k, st := range nd.states {
					c.truth[k] = st
				}
			}
			c.capture = true
			c.settle(step, time.Minute)
			var pages, entries int
			for _, m := range c.captured {
				if len(m.Entries) > cfg.MaxBatchKeys {
					t.Fatalf("%d entries > MaxBatchKeys %d: %s", len(m.Entries), cfg.MaxBatchKeys, describe(&m))
				}
				raw, err := EncodeMessage(m)
				if err != nil {
					t.Fatal(err)
				}
				if over := len(raw) - m.sizeWithout(); len(m.Entries) > 1 && over > cfg.MaxBatchBytes {
					t.Fatalf("%d entry bytes > MaxBatchBytes %d: %s", over, cfg.MaxBatchBytes, describe(&m))
				}
				if m.Kind == KindRepairData {
					pages++
					entries += len(m.Entries)
				}
			}
			if entries < 300 {
				t.Errorf("repair moved %d entries, want ≥ 300 (the keys were loaded, not logged)", entries)
			}
			t.Logf("%d repair pages, %d entries", pages, entries)
		})
	}
}

// TestHeartbeatLag: lag is unknown before contact, about a sync interval
// while connected, grows during a partition and recovers after.
func TestHeartbeatLag(t *testing.T) {
	c := newCluster(t, 9, 2, testConfig(), netConfig{minDelay: 10 * time.Millisecond, maxDelay: 10 * time.Millisecond})
	lag := func() float64 { return c.nodes[0].eng.Status(c.now).Peers[0].LagSeconds }
	if l := lag(); l != -1 {
		t.Fatalf("lag before contact %v, want -1", l)
	}
	for range 10 {
		c.incr(1, key(1), 1)
		c.advance(step)
	}
	c.run(time.Second)
	if l := lag(); l < 0 || l > 0.25 {
		t.Fatalf("connected lag %v s, want ≤ 0.25", l)
	}
	c.partition(0, 1)
	c.run(10 * time.Second)
	if l := lag(); l < 9.8 || l > 10.3 {
		t.Fatalf("lag after 10s cut %v s, want ≈ 10", l)
	}
	c.incr(1, key(2), 1)
	c.heal()
	c.settle(step, time.Minute)
	c.run(500 * time.Millisecond)
	if l := lag(); l < 0 || l > 0.25 {
		t.Fatalf("lag after heal %v s, want ≤ 0.25", l)
	}
}

// TestLagNotCaughtUpWhileBehind: a heartbeat from a peer whose log we have
// not fully acknowledged does not count as caught up.
func TestLagNotCaughtUpWhileBehind(t *testing.T) {
	src := mapSource{}
	b := mustEngine(t, "b", 2, src)
	b.AddPeer(simStart, "a")
	hb := Message{Kind: KindDelta, From: "a", To: "b", FromEpoch: 1, ToEpoch: 2, FromSeq: 5, ToSeq: 5, Head: 9, Acked: 5}
	if _, err := b.Step(simStart, hb); err != nil {
		t.Fatal(err)
	}
	if l := b.Status(simStart).Peers[0].LagSeconds; l != -1 {
		t.Fatalf("lag %v after a heartbeat 4 behind; want -1 (never caught up)", l)
	}
	hb.FromSeq, hb.ToSeq, hb.Acked = 9, 9, 9
	if _, err := b.Step(simStart.Add(time.Second), hb); err != nil {
		t.Fatal(err)
	}
	if l := b.Status(simStart.Add(3 * time.Second)).Peers[0].LagSeconds; l != 2 {
		t.Fatalf("lag %v, want 2", l)
	}
}

// TestDeterministicTrace: the same seed gives the identical message trace.
func TestDeterministicTrace(t *testing.T) {
	run := func(seed uint64) string {
		c := newCluster(t, seed, 3, testConfig(), lossyNet())
		c.trace = new(strings.Builder)
		for i := range 120 {
			c.incr(c.rng.IntN(3), key(c.rng.IntN(30)), 1)
			if i == 40 {
				c.partition(0, 1)
			}
			if i == 80 {
				c.heal()
				c.restart(2, false)
			}
			c.advance(step)
		}
		c.settle(step, time.Minute)
		return c.trace.String()
	}
	a, b := run(42), run(42)
	if a != b {
		i := 0
		for i < len(a) && i < len(b) && a[i] == b[i] {
			i++
		}
		t.Fatalf("same seed, different traces; first difference at byte %d:\n%s\nvs\n%s", i, snippet(a, i), snippet(b, i))
	}
	if run(43) == a {
		t.Fatal("different seeds gave the same trace")
	}
	t.Logf("trace of %d lines, identical across runs", strings.Count(a, "\n"))
}

func snippet(s string, i int) string {
	return s[max(0, i-200):min(len(s), i+200)]
}

// TestHotKeyLogBounded: one key changed a million times leaves one live log
// entry and a small log.
func TestHotKeyLogBounded(t *testing.T) {
	src := mapSource{}
	e := mustEngine(t, "a", 1, src)
	k := key(1)
	var st crdt.PNCounter
	for i := range 100_000 {
		st.Increment(1, 1, int64(i))
		src[k] = st.Clone()
		e.Changed(simStart, k)
	}
	if e.live != 1 || len(e.log)-e.lo > 2048 {
		t.Fatalf("live %d, log %d entries after 100k changes of one key", e.live, len(e.log)-e.lo)
	}
	entries, to, _ := e.collect(0, e.head, true, 0)
	if len(entries) != 1 || to != e.head || !entries[0].State.Equal(st) {
		t.Fatalf("collect gave %d entries up to %d (head %d)", len(entries), to, e.head)
	}
}

// TestAckRules: stale acks, acks for another epoch of ours and out-of-order
// acks move the cursor only as far as is sound.
func TestAckRules(t *testing.T) {
	src := mapSource{}
	cfg := DefaultConfig("a")
	cfg.Epoch = 1
	cfg.MaxBatchKeys = 2
	cfg.MaxInflight = 3
	e, err := New(cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	e.AddPeer(simStart, "b")
	for i := range 6 {
		src[key(i)] = crdt.PNCounter{P: crdt.NewGCounter(crdt.Slot{Replica: 1, Count: 1})}
		e.Changed(simStart, key(i))
	}
	// Ack the repair so deltas flow (first contact with an empty peer).
	r := e.Tick(simStart)
	var deltas []Message
	for _, m := range r.Messages {
		if m.Kind == KindDelta && m.ToSeq > m.FromSeq {
			deltas = append(deltas, m)
		}
	}
	if len(deltas) != 0 {
		t.Fatalf("deltas held during the first repair expected, got %d", len(deltas))
	}
	// Answer the digest with an empty reply page; our side then pages and
	// completes when acked. Simpler: test acks on the inflight machinery
	// directly.
	p := e.peers["b"]
	p.session = nil
	e.shipDeltas(simStart, p, false)
	if len(p.inflight) != 3 || p.inflight[0].to != 2 || p.inflight[2].to != 6 {
		t.Fatalf("inflight %+v, want three ranges of two", p.inflight)
	}
	ack := func(from, to, toEpoch uint64) {
		t.Helper()
		if _, err := e.Step(simStart, Message{Kind: KindAck, From: "b", To: "a", FromEpoch: 7, ToEpoch: toEpoch, FromSeq: from, ToSeq: to}); err != nil {
			t.Fatal(err)
		}
	}
	ack(2, 4, 1) // out of order: held
	if p.cursor != 0 || !p.inflight[1].acked {
		t.Fatalf("cursor %d after out-of-order ack", p.cursor)
	}
	ack(0, 2, 99) // for another epoch of ours: ignored
	if p.cursor != 0 {
		t.Fatalf("cursor %d after ack for another epoch", p.cursor)
	}
	ack(0, 2, 1) // closes the gap: cursor jumps over the held ack
	if p.cursor != 4 || len(p.inflight) != 1 {
		t.Fatalf("cursor %d, %d inflight; want 4, 1", p.cursor, len(p.inflight))
	}
	ack(0, 2, 1) // stale duplicate
	if p.cursor != 4 {
		t.Fatalf("cursor %d after stale ack", p.cursor)
	}
	if _, err := e.Step(simStart, Message{Kind: KindAck, From: "b", To: "a", FromEpoch: 7, ToEpoch: 1, FromSeq: 4, ToSeq: 60}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("ack beyond head: %v", err)
	}
	// A new epoch of b resets its cursor; b's old epoch is then refused.
	ack(4, 6, 1)
	if p.cursor != 6 {
		t.Fatalf("cursor %d", p.cursor)
	}
	if _, err := e.Step(simStart, Message{Kind: KindDelta, From: "b", To: "a", FromEpoch: 8, ToEpoch: 1}); err != nil {
		t.Fatal(err)
	}
	if p.cursor != 0 || !p.repairDue {
		t.Fatalf("new epoch: cursor %d, repair due %v", p.cursor, p.repairDue)
	}
	if _, err := e.Step(simStart, Message{Kind: KindDelta, From: "b", To: "a", FromEpoch: 7, ToEpoch: 1}); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("old epoch after new: %v", err)
	}
}

// TestStepRejects: malformed, misrouted and unexpected messages return an
// error wrapping the right sentinel and change nothing; nothing panics.
func TestStepRejects(t *testing.T) {
	e := mustEngine(t, "a", 1, mapSource{})
	e.AddPeer(simStart, "b")
	ok := Message{Kind: KindDelta, From: "b", To: "a", FromEpoch: 2}
	with := func(f func(m *Message)) Message { m := ok; f(&m); return m }
	big := make([]Entry, MaxEntries+1)
	for _, tc := range []struct {
		name string
		m    Message
		want error
	}{
		{"zero message", Message{}, ErrMalformed},
		{"unknown kind", with(func(m *Message) { m.Kind = 99 }), ErrMalformed},
		{"epoch 0", with(func(m *Message) { m.FromEpoch = 0 }), ErrMalformed},
		{"no sender", with(func(m *Message) { m.From = "" }), ErrMalformed},
		{"long sender", with(func(m *Message) { m.From = NodeID(strings.Repeat("x", MaxNodeIDBytes+1)) }), ErrMalformed},
		{"from self", with(func(m *Message) { m.From = "a"; m.To = "a" }), ErrMalformed},
		{"misrouted", with(func(m *Message) { m.To = "c" }), ErrMisrouted},
		{"unknown peer", with(func(m *Message) { m.From = "z" }), ErrUnknownPeer},
		{"seqs reversed", with(func(m *Message) { m.FromSeq, m.ToSeq, m.Head = 5, 4, 9 }), ErrMalformed},
		{"beyond head", with(func(m *Message) { m.ToSeq, m.Head = 5, 4 }), ErrMalformed},
		{"heartbeat with entries", with(func(m *Message) { m.Entries = []Entry{{Key: key(1)}} }), ErrMalformed},
		{"foreign field", with(func(m *Message) { m.Session = 3 }), ErrMalformed},
		{"too many entries", with(func(m *Message) { m.ToSeq, m.Head, m.Entries = 1, 1, big }), ErrMalformed},
		{"long key", with(func(m *Message) {
			m.ToSeq, m.Head = 1, 1
			m.Entries = []Entry{{Key: crdt.Key{Video: strings.Repeat("v", MaxKeyPartBytes+1)}}}
		}), ErrMalformed},
		{"empty ack", Message{Kind: KindAck, From: "b", To: "a", FromEpoch: 2, FromSeq: 3, ToSeq: 3}, ErrMalformed},
		{"ack beyond head", Message{Kind: KindAck, From: "b", To: "a", FromEpoch: 2, ToEpoch: 1, ToSeq: 3}, ErrMalformed},
		{"digest 3 buckets", Message{Kind: KindDigest, From: "b", To: "a", FromEpoch: 2, Session: 1, Sums: make([]uint64, 3)}, ErrMalformed},
		{"digest session 0", Message{Kind: KindDigest, From: "b", To: "a", FromEpoch: 2, Sums: make([]uint64, 4)}, ErrMalformed},
		{"buckets unsorted", Message{Kind: KindRepairData, From: "b", To: "a", FromEpoch: 2, Session: 1, Reply: true, Buckets: []uint32{3, 1}}, ErrMalformed},
		{"buckets on page 1", Message{Kind: KindRepairData, From: "b", To: "a", FromEpoch: 2, Session: 1, Reply: true, Page: 1, Buckets: []uint32{1}}, ErrMalformed},
		{"buckets beyond ours", Message{Kind: KindRepairData, From: "b", To: "a", FromEpoch: 2, ToEpoch: 1, Session: 1, Reply: true, Buckets: []uint32{5000}}, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.Status(simStart)
			r, err := e.Step(simStart, tc.m)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if len(r.Messages) != 0 || len(r.Apply) != 0 {
				t.Fatalf("refused message produced %+v", r)
			}
			if after := e.Status(simStart); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("refused message changed status\n%+v\n%+v", before, after)
			}
		})
	}
}

// TestRemovePeer: a removed peer gets nothing and is refused.
func TestRemovePeer(t *testing.T) {
	e := mustEngine(t, "a", 1, mapSource{})
	e.AddPeer(simStart, "b")
	e.AddPeer(simStart, "c")
	e.RemovePeer("b")
	for i := range 50 {
		r := e.Tick(simStart.Add(time.Duration(i) * time.Second))
		for _, m := range r.Messages {
			if m.To == "b" {
				t.Fatalf("sent to removed peer: %s", describe(&m))
			}
		}
	}
	if _, err := e.Step(simStart, Message{Kind: KindDelta, From: "b", To: "a", FromEpoch: 2}); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("step from removed peer: %v", err)
	}
	if ps := e.Peers(); len(ps) != 1 || ps[0] != "c" {
		t.Fatalf("peers %v", ps)
	}
}

func TestConfigValidation(t *testing.T) {
	good := DefaultConfig("a")
	good.Epoch = 1
	if _, err := New(good, mapSource{}); err != nil {
		t.Fatal(err)
	}
	if e, err := New(Config{Self: "a", Epoch: 1}, mapSource{}); err != nil || e.Config() != good {
		t.Fatalf("zero fields not defaulted: %v %+v", err, e.Config())
	}
	for name, f := range map[string]func(c *Config){
		"no self":       func(c *Config) { c.Self = "" },
		"no epoch":      func(c *Config) { c.Epoch = 0 },
		"buckets 3":     func(c *Config) { c.Buckets = 3 },
		"buckets big":   func(c *Config) { c.Buckets = 2 * MaxBuckets },
		"batch keys":    func(c *Config) { c.MaxBatchKeys = MaxEntries + 1 },
		"batch bytes":   func(c *Config) { c.MaxBatchBytes = MaxBatchBytesLimit + 1 },
		"neg log":       func(c *Config) { c.LogCapacity = -1 },
		"neg interval":  func(c *Config) { c.SyncInterval = -1 },
		"neg window":    func(c *Config) { c.RepairWindow = -1 },
		"neg inflight":  func(c *Config) { c.MaxInflight = -1 },
		"neg retry":     func(c *Config) { c.RetryTimeout = -time.Second },
		"neg repair":    func(c *Config) { c.RepairInterval = -time.Second },
		"neg batchkeys": func(c *Config) { c.MaxBatchKeys = -1 },
	} {
		c := good
		f(&c)
		if _, err := New(c, mapSource{}); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err %v, want ErrConfig", name, err)
		}
	}
	if _, err := New(good, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("nil source: %v", err)
	}
}

// TestRejectedKeys: a key too long for the wire is counted, not shipped.
func TestRejectedKeys(t *testing.T) {
	src := mapSource{}
	e := mustEngine(t, "a", 1, src)
	k := crdt.Key{Video: strings.Repeat("v", MaxKeyPartBytes+1), Event: "view"}
	src[k] = crdt.PNCounter{P: crdt.NewGCounter(crdt.Slot{Replica: 1, Count: 1})}
	e.Changed(simStart, k)
	if st := e.Status(simStart); st.RejectedKeys != 1 || st.Keys != 0 || st.Head != 0 {
		t.Fatalf("status %+v", st)
	}
}

type mapSource map[crdt.Key]crdt.PNCounter

func (s mapSource) State(k crdt.Key) crdt.PNCounter { return s[k].Clone() }

func mustEngine(t testing.TB, self NodeID, epoch uint64, src Source) *Engine {
	t.Helper()
	cfg := DefaultConfig(self)
	cfg.Epoch = epoch
	e, err := New(cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
