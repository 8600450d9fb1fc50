package replication

import (
	"container/heap"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/tallyhq/tally/crdt"
)

// A deterministic in-memory cluster: nodes with map sources (durability is
// immediate), a simulated clock and a lossy network driven by one seeded PCG.
// Nothing here reads the wall clock or starts a goroutine, so a seed fixes the
// whole run, message trace included.

var simStart = time.Unix(1_700_000_000, 0).UTC()

type simNode struct {
	id      NodeID
	replica crdt.ReplicaID
	states  map[crdt.Key]crdt.PNCounter
	eng     *Engine
	up      bool
	incarn  int
}

// State implements Source. It returns a copy: the engine keeps it in messages.
func (n *simNode) State(k crdt.Key) crdt.PNCounter { return n.states[k].Clone() }

type inflightMsg struct {
	at  time.Time
	seq uint64
	m   Message
	raw []byte // the encoding, when the cluster runs the wire codec
}

type msgQueue []inflightMsg

func (q msgQueue) Len() int { return len(q) }
func (q msgQueue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q msgQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *msgQueue) Push(x any)   { *q = append(*q, x.(inflightMsg)) }
func (q *msgQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

type netConfig struct {
	drop, dup          float64 // probabilities per message
	minDelay, maxDelay time.Duration
}

// tb is what the cluster needs of *testing.T, *testing.B and *rapid.T.
type tb interface {
	Helper()
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
}

type cluster struct {
	t      tb
	rng    *rand.Rand
	now    time.Time
	cfg    Config // template; Self and Epoch set per node
	net    netConfig
	wire   bool // pass every message through EncodeMessage/DecodeMessage
	noEcho bool // report merges that adopt the entry with ChangedFrom
	nodes  []*simNode
	byID   map[NodeID]*simNode
	queue  msgQueue
	seq    uint64
	cut    map[[2]NodeID]bool
	truth  map[crdt.Key]crdt.PNCounter
	lossy  map[crdt.ReplicaID]bool // replicas whose node was wiped
	// expired, if set, names keys past their end of life (Engine.Forget):
	// nodes ignore them when they arrive, as region does with old claims.
	expired func(crdt.Key) bool

	trace     *strings.Builder // nil: no trace
	nextEpoch uint64           // if set, the epoch of the next engine started
	capture   bool             // keep every message sent in captured
	captured  []Message
	sent      int
	delivered int
	dropped   int
	bytes     int
	refused   map[string]int // Step errors by sentinel (expected around restarts)
}

func newCluster(t tb, seed uint64, n int, cfg Config, net netConfig) *cluster {
	c := &cluster{
		t:       t,
		rng:     rand.New(rand.NewPCG(seed, seed^0x5eed)),
		now:     simStart,
		cfg:     cfg,
		net:     net,
		wire:    true,
		noEcho:  true,
		byID:    map[NodeID]*simNode{},
		cut:     map[[2]NodeID]bool{},
		truth:   map[crdt.Key]crdt.PNCounter{},
		lossy:   map[crdt.ReplicaID]bool{},
		refused: map[string]int{},
	}
	for i := range n {
		id := NodeID(string(rune('a' + i)))
		nd := &simNode{id: id, states: map[crdt.Key]crdt.PNCounter{}}
		c.nodes = append(c.nodes, nd)
		c.byID[id] = nd
		c.start(nd)
	}
	for _, a := range c.nodes {
		for _, b := range c.nodes {
			a.eng.AddPeer(c.now, b.id)
		}
	}
	return c
}

// start (re)creates nd's engine with a new epoch, loading what it holds.
func (c *cluster) start(nd *simNode) {
	nd.incarn++
	cfg := c.cfg
	cfg.Self = nd.id
	cfg.Epoch = uint64(nd.incarn)<<32 | uint64(nd.id[0])
	if c.nextEpoch != 0 {
		cfg.Epoch, c.nextEpoch = c.nextEpoch, 0
	}
	eng, err := New(cfg, nd)
	if err != nil {
		c.t.Fatalf("new engine %s: %v", nd.id, err)
	}
	keys := make([]crdt.Key, 0, len(nd.states))
	for k := range nd.states {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, cmpKey)
	for _, k := range keys {
		eng.Load(k)
	}
	nd.eng = eng
	nd.up = true
}

// restart replaces a node's engine (new epoch). With wipe the node also
// loses its state and takes a new replica ID, as a node with a lost disk does.
func (c *cluster) restart(i int, wipe bool) {
	nd := c.nodes[i]
	if wipe {
		nd.states = map[crdt.Key]crdt.PNCounter{}
		c.lossy[c.replicaOf(i)] = true // what it alone held is gone
	}
	c.start(nd)
	if wipe {
		nd.replica = crdt.ReplicaID(nd.incarn)<<8 | crdt.ReplicaID(i+1)
	}
	for _, o := range c.nodes {
		if o != nd {
			nd.eng.AddPeer(c.now, o.id)
		}
	}
}

func (c *cluster) replicaOf(i int) crdt.ReplicaID {
	nd := c.nodes[i]
	if nd.replica == 0 {
		nd.replica = crdt.ReplicaID(1)<<8 | crdt.ReplicaID(i+1)
	}
	return nd.replica
}

// incr counts n views of key k at node i.
func (c *cluster) incr(i int, k crdt.Key, n uint64) {
	nd := c.nodes[i]
	r := c.replicaOf(i)
	ms := c.now.UnixMilli()
	st := nd.states[k].Clone()
	st.Increment(r, n, ms)
	nd.states[k] = st
	tr := c.truth[k].Clone()
	tr.Merge(st)
	c.truth[k] = tr
	nd.eng.Changed(c.now, k)
}

func linkKey(a, b NodeID) [2]NodeID {
	if a > b {
		a, b = b, a
	}
	return [2]NodeID{a, b}
}

func (c *cluster) partition(a, b int) { c.cut[linkKey(c.nodes[a].id, c.nodes[b].id)] = true }
func (c *cluster) heal()              { clear(c.cut) }

func (c *cluster) logf(format string, args ...any) {
	if c.trace != nil {
		fmt.Fprintf(c.trace, "%6dms ", c.now.Sub(simStart).Milliseconds())
		fmt.Fprintf(c.trace, format, args...)
		c.trace.WriteByte('\n')
	}
}

func describe(m *Message) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s→%s %s e%x→e%x", m.From, m.To, m.Kind, m.FromEpoch, m.ToEpoch)
	switch m.Kind {
	case KindDelta, KindAck:
		fmt.Fprintf(&b, " (%d,%d] head=%d acked=%d", m.FromSeq, m.ToSeq, m.Head, m.Acked)
	case KindDigest:
		h := fnv.New64a()
		for _, s := range m.Sums {
			fmt.Fprintf(h, "%x,", s)
		}
		fmt.Fprintf(&b, " s%d sums=%d/%x", m.Session, len(m.Sums), h.Sum64())
	case KindRepairData, KindRepairAck:
		fmt.Fprintf(&b, " s%d p%d final=%v reply=%v buckets=%d", m.Session, m.Page, m.Final, m.Reply, len(m.Buckets))
	}
	if len(m.Entries) > 0 {
		h := fnv.New64a()
		for _, e := range m.Entries {
			fmt.Fprintf(h, "%s/%s=%v;", e.Key.Video, e.Key.Event, e.State)
		}
		fmt.Fprintf(&b, " entries=%d/%x", len(m.Entries), h.Sum64())
	}
	return b.String()
}

// send puts messages on the network: each may be dropped, delayed (which
// reorders) or duplicated.
func (c *cluster) send(msgs []Message) {
	for _, m := range msgs {
		c.sent++
		if c.capture {
			c.captured = append(c.captured, m)
		}
		var raw []byte
		if c.wire {
			b, err := EncodeMessage(m)
			if err != nil {
				c.t.Fatalf("engine produced a message the codec refuses: %v\n%s", err, describe(&m))
			}
			raw = b
			c.bytes += len(b)
		}
		copies := 1
		if c.rng.Float64() < c.net.dup {
			copies = 2
		}
		for range copies {
			if c.cut[linkKey(m.From, m.To)] || c.rng.Float64() < c.net.drop {
				c.dropped++
				c.logf("drop %s", describe(&m))
				continue
			}
			d := c.net.minDelay
			if span := c.net.maxDelay - c.net.minDelay; span > 0 {
				d += time.Duration(c.rng.Int64N(int64(span)))
			}
			c.seq++
			heap.Push(&c.queue, inflightMsg{at: c.now.Add(d), seq: c.seq, m: m, raw: raw})
		}
	}
}

// handle does what a node does with a Ready: merge, report changes, ack
// (durability is immediate here), send.
func (c *cluster) handle(nd *simNode, r Ready) {
	for _, a := range r.Apply {
		for _, e := range a.Entries {
			if c.expired != nil && c.expired(e.Key) {
				continue
			}
			st := nd.states[e.Key].Clone()
			if st.Merge(e.State) {
				nd.states[e.Key] = st
				if c.noEcho && st.Equal(e.State) {
					nd.eng.ChangedFrom(c.now, e.Key, a.From, a.FromEpoch)
				} else {
					nd.eng.Changed(c.now, e.Key)
				}
			}
		}
		if a.Ack != nil {
			c.send([]Message{*a.Ack})
		}
	}
	c.send(r.Messages)
}

func (c *cluster) deliver(im inflightMsg) {
	m := im.m
	dst := c.byID[m.To]
	if dst == nil || !dst.up || c.cut[linkKey(m.From, m.To)] {
		c.dropped++
		return
	}
	if c.wire {
		d, err := DecodeMessage(im.raw)
		if err != nil {
			c.t.Fatalf("decode own encoding: %v\n%s", err, describe(&m))
		}
		m = d
	}
	c.delivered++
	c.logf("recv %s", describe(&m))
	r, err := dst.eng.Step(c.now, m)
	if err != nil {
		switch {
		case errors.Is(err, ErrStaleEpoch):
			c.refused["stale-epoch"]++
		case errors.Is(err, ErrUnknownPeer):
			c.refused["unknown-peer"]++
		default:
			c.t.Fatalf("step %s: %v", describe(&m), err)
		}
		c.logf("refused: %v", err)
		return
	}
	c.handle(dst, r)
}

// advance moves the clock by dt, delivering what arrives meanwhile, then
// ticks every node.
func (c *cluster) advance(dt time.Duration) {
	end := c.now.Add(dt)
	for c.queue.Len() > 0 && !c.queue[0].at.After(end) {
		im := heap.Pop(&c.queue).(inflightMsg)
		c.now = im.at
		c.deliver(im)
	}
	c.now = end
	for _, nd := range c.nodes {
		if nd.up {
			c.handle(nd, nd.eng.Tick(c.now))
		}
	}
}

// run advances the clock by d in steps of step.
func (c *cluster) run(d time.Duration) {
	for end := c.now.Add(d); c.now.Before(end); {
		c.advance(min(step, end.Sub(c.now)))
	}
}

// converged reports whether every node holds exactly the true totals: the
// merge of every increment made, less the slots of replicas whose only copy
// was wiped (c.lossy).
func (c *cluster) converged() bool {
	first := c.nodes[0].states
	for _, nd := range c.nodes {
		if len(nd.states) != len(first) {
			return false
		}
		for k, st := range nd.states {
			if !st.Equal(first[k]) {
				return false
			}
		}
	}
	for k, tr := range c.truth {
		have := first[k]
		if !tr.Covers(have) || !have.Covers(c.withoutLossy(tr)) {
			return false
		}
	}
	return len(c.lossy) > 0 || len(first) == len(c.truth)
}

func (c *cluster) withoutLossy(st crdt.PNCounter) crdt.PNCounter {
	if len(c.lossy) == 0 {
		return st
	}
	keep := func(g crdt.GCounter) crdt.GCounter {
		var out []crdt.Slot
		for _, s := range g.Slots() {
			if !c.lossy[s.Replica] {
				out = append(out, s)
			}
		}
		return crdt.NewGCounter(out...)
	}
	return crdt.PNCounter{P: keep(st.P), N: keep(st.N)}
}

// quiet reports whether delta replication is idle: every cursor at its head.
// (Periodic repairs go on in the background; see repairsLive.)
func (c *cluster) quiet() bool {
	for _, nd := range c.nodes {
		if !nd.up {
			continue
		}
		st := nd.eng.Status(c.now)
		for _, p := range st.Peers {
			if p.Behind != 0 || p.Inflight != 0 {
				return false
			}
		}
	}
	return true
}

// repairsLive runs for d and fails unless every pair of nodes completed a
// repair meanwhile (one session serves both directions, so it counts for the
// initiator as Repairs and for the other side as Served).
func (c *cluster) repairsLive(d time.Duration) {
	c.t.Helper()
	count := func() map[[2]NodeID]uint64 {
		m := map[[2]NodeID]uint64{}
		for _, nd := range c.nodes {
			for _, p := range nd.eng.Status(c.now).Peers {
				m[linkKey(nd.id, p.Peer)] += p.Repairs
			}
		}
		return m
	}
	before := count()
	c.run(d)
	for pair, n := range count() {
		if n <= before[pair] {
			c.t.Fatalf("no repair between %s and %s in %v\n%s", pair[0], pair[1], d, c.report())
		}
	}
}

// settle ticks until the cluster has converged and is quiet, failing after
// limit of simulated time. It returns the simulated time it took.
func (c *cluster) settle(step, limit time.Duration) time.Duration {
	c.t.Helper()
	return c.settleWhen(step, limit, func() bool { return c.converged() && c.quiet() })
}

func (c *cluster) settleWhen(step, limit time.Duration, done func() bool) time.Duration {
	c.t.Helper()
	start := c.now
	for c.now.Sub(start) <= limit {
		if done() {
			return c.now.Sub(start)
		}
		c.advance(step)
	}
	c.t.Fatalf("no convergence within %v\n%s", limit, c.report())
	return 0
}

func (c *cluster) report() string {
	var b strings.Builder
	keys := make([]crdt.Key, 0, len(c.truth))
	for k := range c.truth {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, cmpKey)
	shown := 0
	for _, nd := range c.nodes {
		for k := range nd.states {
			if _, ok := c.truth[k]; !ok {
				keys = append(keys, k)
			}
		}
	}
	slices.SortFunc(keys, cmpKey)
	keys = slices.Compact(keys)
	for _, k := range keys {
		want := c.withoutLossy(c.truth[k])
		for _, nd := range c.nodes {
			have := nd.states[k]
			if (!c.truth[k].Covers(have) || !have.Covers(want) || !have.Equal(c.nodes[0].states[k])) && shown < 10 {
				fmt.Fprintf(&b, "  %s %s: have %v want ⊒ %v, ⊑ %v\n", nd.id, k, have, want, c.truth[k])
				shown++
			}
		}
	}
	for _, nd := range c.nodes {
		st := nd.eng.Status(c.now)
		fmt.Fprintf(&b, "  %s head=%d logStart=%d keys=%d\n", nd.id, st.Head, st.LogStart, st.Keys)
		for _, p := range st.Peers {
			fmt.Fprintf(&b, "    → %s %+v\n", p.Peer, p)
		}
	}
	fmt.Fprintf(&b, "  sent=%d delivered=%d dropped=%d queued=%d refused=%v lossy=%v", c.sent, c.delivered, c.dropped, c.queue.Len(), c.refused, c.lossy)
	return b.String()
}

func testConfig() Config {
	cfg := DefaultConfig("")
	cfg.Buckets = 64
	cfg.MaxBatchKeys = 16
	cfg.MaxInflight = 4
	cfg.RepairWindow = 2
	cfg.LogCapacity = 1 << 12
	cfg.SyncInterval = 100 * time.Millisecond
	cfg.RetryTimeout = 400 * time.Millisecond
	cfg.RepairInterval = 5 * time.Second
	return cfg
}

func lossyNet() netConfig {
	return netConfig{drop: 0.1, dup: 0.05, minDelay: 5 * time.Millisecond, maxDelay: 120 * time.Millisecond}
}

func key(i int) crdt.Key { return crdt.Key{Video: fmt.Sprintf("v%03d", i), Event: "view"} }
