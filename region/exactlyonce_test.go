package region

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/store"
)

// bus is an in-memory network for a few replicating nodes: Send queues,
// deliver hands queued messages to their nodes. Links can be cut.
type bus struct {
	mu    sync.Mutex
	queue map[string][][]byte // by address
	nodes map[string]*Node
	cut   map[string]bool // addresses that receive nothing (dropped)
}

type busTransport struct{ b *bus }

func (t busTransport) Send(addr string, payload []byte) error {
	t.b.mu.Lock()
	defer t.b.mu.Unlock()
	if t.b.cut[addr] {
		return nil
	}
	t.b.queue[addr] = append(t.b.queue[addr], payload)
	return nil
}

func newBus() *bus {
	return &bus{queue: map[string][][]byte{}, nodes: map[string]*Node{}, cut: map[string]bool{}}
}

// replicaNode is one node of a claim test: its name doubles as its address.
type replicaNode struct {
	name, region string
	n            *Node
}

// join enables replication on n as name and tells every node of the bus
// about every other.
func (b *bus) join(t *testing.T, name string, n *Node) *replicaNode {
	t.Helper()
	if err := n.EnableReplication(ReplicationConfig{Self: name, Transport: busTransport{b}}); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	b.nodes[name] = n
	b.mu.Unlock()
	b.announce()
	return &replicaNode{name: name, region: n.Region(), n: n}
}

func (b *bus) announce() {
	b.mu.Lock()
	var peers []Peer
	for name, n := range b.nodes {
		peers = append(peers, Peer{Name: name, Region: n.Region(), ReplAddr: name, Replica: n.Identity().Replica, Alive: true})
	}
	nodes := make([]*Node, 0, len(b.nodes))
	for _, n := range b.nodes {
		nodes = append(nodes, n)
	}
	b.mu.Unlock()
	for _, n := range nodes {
		n.SetPeers(peers)
	}
}

// leave takes a node off the bus (crashed or closed): nothing reaches it.
func (b *bus) leave(name string) {
	b.mu.Lock()
	delete(b.nodes, name)
	delete(b.queue, name)
	b.mu.Unlock()
}

// pump ticks every node and delivers messages, advancing clock by step per
// round, until done() holds; it fails the test after many rounds (a
// generous bound: convergence takes a few).
func (b *bus) pump(t *testing.T, clock *fakeClock, done func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for round := 0; ; round++ {
		if done() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not converged after %d rounds", round)
		}
		clock.Advance(50 * time.Millisecond)
		b.mu.Lock()
		nodes := make(map[string]*Node, len(b.nodes))
		for k, v := range b.nodes {
			nodes[k] = v
		}
		b.mu.Unlock()
		for _, n := range nodes {
			n.ReplicationTick()
		}
		for {
			b.mu.Lock()
			var addr string
			var payload []byte
			for a, q := range b.queue {
				if len(q) > 0 && nodes[a] != nil {
					addr, payload = a, q[0]
					b.queue[a] = q[1:]
					break
				}
			}
			b.mu.Unlock()
			if payload == nil {
				break
			}
			_ = nodes[addr].ReplicationReceive(payload) // refusals (unknown peer early on) are retried by the protocol
		}
		for _, n := range nodes {
			if n.cfg.ManualCommit {
				n.StepCommit()
			} else if err := n.committer.Flush(testCtx(t)); err != nil {
				t.Fatal(err)
			}
			n.flushAcks()
		}
	}
}

// rounds pumps n rounds whatever happens (peers introduce themselves; or
// nothing more must change).
func (b *bus) rounds(t *testing.T, clock *fakeClock, n int) {
	t.Helper()
	i := 0
	b.pump(t, clock, func() bool { i++; return i > n })
}

func allShow(video string, want uint64, nodes ...*replicaNode) func() bool {
	return func() bool {
		for _, rn := range nodes {
			c, err := rn.n.Views(video)
			if err != nil || c.Value != want {
				return false
			}
		}
		return true
	}
}

func regionConfig(clock *fakeClock, region string) Config {
	cfg := testConfig(clock)
	cfg.Region = region
	return cfg
}

// TestClaimsThreeRegionsCountOnce: a client whose requests time out resends
// the same view to all three regions before any replication; each counts it.
// Once the claims meet, every region shows exactly 1, the earliest claim's
// region keeps its count and the other two each compensated once; a later
// repeat anywhere is a duplicate.
func TestClaimsThreeRegionsCountOnce(t *testing.T) {
	clock := newFakeClock(t0)
	b := newBus()
	var nodes []*replicaNode
	for _, r := range []string{"us", "eu", "ap"} {
		nodes = append(nodes, b.join(t, r+"-1", openNode(t, regionConfig(clock, r))))
	}
	b.rounds(t, clock, 10)
	v := View{Video: "v1", User: "u1"}
	// ap is asked first, then eu, then us: ap's claim is the earliest.
	for _, i := range []int{2, 1, 0} {
		if res := record(t, nodes[i].n, v); !res.Counted {
			t.Fatalf("%s: first sight of the view not counted", nodes[i].name)
		}
		clock.Advance(time.Millisecond)
	}
	b.pump(t, clock, func() bool {
		for _, rn := range nodes {
			if c := views(t, rn.n, "v1"); c.Value != 1 || c.Compensated != 2 {
				return false
			}
		}
		return true
	})
	for i, rn := range nodes {
		want := uint64(1)
		if i == 2 {
			want = 0
		}
		st := rn.n.Stats()
		if st.Compensations != want {
			t.Errorf("%s compensated %d times, want %d", rn.name, st.Compensations, want)
		}
		c := views(t, rn.n, "v1")
		if c.Compensated != 2 {
			t.Errorf("%s: Compensated = %d, want 2 (us and eu took theirs back)", rn.name, c.Compensated)
		}
		if res := record(t, rn.n, v); res.Counted {
			t.Errorf("%s counted a repeat", rn.name)
		}
	}
	// More rounds change nothing: compensation happens once.
	b.rounds(t, clock, 100)
	b.pump(t, clock, allShow("v1", 1, nodes...))
}

// TestRemoteClaimMakesRepeatADuplicate: once a region's claim has reached
// another region, a retry there is answered counted:false and never counted.
func TestRemoteClaimMakesRepeatADuplicate(t *testing.T) {
	clock := newFakeClock(t0)
	b := newBus()
	us := b.join(t, "us-1", openNode(t, regionConfig(clock, "us")))
	eu := b.join(t, "eu-1", openNode(t, regionConfig(clock, "eu")))
	for i := range 20 {
		record(t, us.n, View{Video: "v", User: fmt.Sprintf("u%d", i)})
	}
	b.pump(t, clock, allShow("v", 20, us, eu))
	for i := range 20 {
		if res := record(t, eu.n, View{Video: "v", User: fmt.Sprintf("u%d", i)}); res.Counted {
			t.Fatalf("retry %d counted in eu after us's claim arrived", i)
		}
	}
	b.pump(t, clock, allShow("v", 20, us, eu))
	if us.n.Stats().Compensations+eu.n.Stats().Compensations != 0 {
		t.Error("compensations without any double count")
	}
}

// TestLoserCrashesAfterCompensating: the loser's compensation is durable but
// the node crashes before replicating it. After the restart it does not
// compensate again, and both regions converge on 1.
func TestLoserCrashesAfterCompensating(t *testing.T) {
	clock := newFakeClock(t0)
	b := newBus()
	us := b.join(t, "us-1", openNode(t, regionConfig(clock, "us")))
	dir := t.TempDir()
	eu := b.join(t, "eu-1", openNode(t, diskConfig(clock, dir, DurabilitySync)))
	b.rounds(t, clock, 10)

	v := View{Video: "v", User: "u"}
	record(t, us.n, v) // earlier: us wins
	clock.Advance(time.Millisecond)
	record(t, eu.n, v)
	// us's claim reaches eu; eu's messages to us are lost (eu dies before
	// anything of its decision gets out).
	b.mu.Lock()
	b.cut["us-1"] = true
	b.mu.Unlock()
	b.pump(t, clock, func() bool { return eu.n.Stats().Compensations == 1 })
	if err := eu.n.committer.Flush(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := views(t, eu.n, "v").Value; got != 1 {
		t.Fatalf("eu after compensating: %d, want 1", got)
	}
	b.leave("eu-1")
	closeNode(t, eu.n) // the decision is durable already; nothing more is sent

	eu2 := b.join(t, "eu-1", openNode(t, diskConfig(clock, dir, DurabilitySync)))
	b.mu.Lock()
	b.cut["us-1"] = false
	b.mu.Unlock()
	b.announce()
	b.pump(t, clock, allShow("v", 1, us, eu2))
	if n := eu2.n.Stats().Compensations; n != 0 {
		t.Errorf("eu compensated %d more times after its restart", n)
	}
	c, _ := eu2.n.claims.get(store.ClaimKey{Video: "v", User: "u", Window: uint64(t0.UnixMilli() / time.Hour.Milliseconds() / 24)})
	if c.Stage(eu2.n.Identity().Replica) != crdt.StageCompensated {
		t.Errorf("eu's claim after restart: %v", c)
	}
}

// TestLoserCrashesBeforeCompensationIsDurable: the loser merges the winning
// claim and decides to compensate, but crashes before that batch is written.
// It comes back with only its own claim; the winner's claim arrives again and
// it compensates then, once.
func TestLoserCrashesBeforeCompensationIsDurable(t *testing.T) {
	clock := newFakeClock(t0)
	b := newBus()
	us := b.join(t, "us-1", openNode(t, regionConfig(clock, "us")))
	dir := t.TempDir()
	st, err := store.Open(store.DefaultOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	cfg := diskConfig(clock, dir, DurabilitySync)
	cfg.Store, cfg.ManualCommit = st, true
	eu, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	euR := b.join(t, "eu-1", eu)
	b.rounds(t, clock, 10)

	v := View{Video: "v", User: "u"}
	record(t, us.n, v)
	clock.Advance(time.Millisecond)
	p, err := eu.SubmitViews([]View{v})
	if err != nil || !p.Results()[0].Counted {
		t.Fatalf("eu: %v %+v", err, p.Results())
	}
	eu.StepCommit() // eu's own claim and count are durable
	// Deliver us's claim to eu by hand until eu has decided (in memory).
	b.mu.Lock()
	b.cut["us-1"] = true
	b.mu.Unlock()
	deadline := time.Now().Add(testTimeout)
	for eu.Stats().Compensations == 0 {
		if time.Now().After(deadline) {
			t.Fatal("eu never learnt of us's claim")
		}
		clock.Advance(50 * time.Millisecond)
		us.n.ReplicationTick()
		eu.ReplicationTick()
		b.mu.Lock()
		q := b.queue["eu-1"]
		b.queue["eu-1"] = nil
		b.mu.Unlock()
		for _, m := range q {
			_ = eu.ReplicationReceive(m)
		}
		if err := us.n.committer.Flush(testCtx(t)); err != nil {
			t.Fatal(err)
		}
	}
	// Crash: the store goes away without the compensation's batch.
	b.leave("eu-1")
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	b.cut["us-1"] = false
	b.mu.Unlock()

	eu2 := b.join(t, "eu-1", openNode(t, diskConfig(clock, dir, DurabilitySync)))
	b.announce()
	if got := views(t, eu2.n, "v").Value; got != 1 {
		t.Fatalf("eu after the crash: %d (its own count), want 1", got)
	}
	b.pump(t, clock, func() bool { return allShow("v", 1, us, eu2)() && eu2.n.Stats().Compensations == 1 })
	b.rounds(t, clock, 100)
	b.pump(t, clock, allShow("v", 1, us, eu2))
	if n := eu2.n.Stats().Compensations; n != 1 {
		t.Errorf("eu compensated %d times after the crash, want 1", n)
	}
	_ = euR
}

// TestClaimsExpire: claim sets leave memory and the replication engine once
// their window and the lag budget have passed, on every node.
func TestClaimsExpire(t *testing.T) {
	clock := newFakeClock(t0)
	b := newBus()
	cfg := func(r string) Config {
		c := regionConfig(clock, r)
		c.DedupWindow, c.LagBudget = time.Minute, 30*time.Second
		return c
	}
	us := b.join(t, "us-1", openNode(t, cfg("us")))
	eu := b.join(t, "eu-1", openNode(t, cfg("eu")))
	for i := range 10 {
		record(t, us.n, View{Video: "v", User: fmt.Sprintf("u%d", i)})
	}
	b.pump(t, clock, allShow("v", 10, us, eu))
	b.pump(t, clock, func() bool { return eu.n.Stats().Claims == 10 })
	keys := func(n *Node) int { return n.ClusterStatus().Engine.Keys }
	// 10 claims, the counter, its 3 time buckets and the unique-viewer chunks.
	b.pump(t, clock, func() bool { return keys(us.n) == keys(eu.n) })
	before := keys(us.n)
	if st := us.n.Stats(); before != 10+4+st.SketchChunks {
		t.Fatalf("engine keys %d; want %d (10 claims, the counter, 3 buckets, %d sketch chunks)", before, 10+4+st.SketchChunks, st.SketchChunks)
	}
	clock.Advance(2 * time.Minute)
	b.pump(t, clock, func() bool {
		return us.n.Stats().Claims == 0 && eu.n.Stats().Claims == 0 && keys(us.n) == before-10 && keys(eu.n) == before-10
	})
	// The count stays, and the same users count again in the new window.
	record(t, eu.n, View{Video: "v", User: "u0"})
	b.pump(t, clock, allShow("v", 11, us, eu))
}
