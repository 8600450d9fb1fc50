package sim

import (
	"fmt"
	"time"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/region"
	"github.com/tallyhq/tally/replication"
	"github.com/tallyhq/tally/store"
)

// node is one simulated tally node: its store outlives its incarnations.
type node struct {
	idx    int
	name   string
	region int
	addr   string // replication address (a name only: no socket)

	st *store.Store
	n  *region.Node // the current incarnation; nil while down
	up bool
	// inc counts incarnations; events scheduled for an older one are void.
	inc int

	skew       time.Duration // clock offset from simulated time
	commitDue  bool          // a group commit is scheduled
	stallUntil time.Duration // disk stalled: no commit before this
	// pending are the submissions not yet in a durable batch: a crash loses them.
	pending []*submission
	// last is the latest durable count read per deduplicated event type
	// (view, share) and video (monotonicity).
	last [numDedup][]uint64
	// lastGross is the latest Value + Compensated per event type and video:
	// every count ever made, which never decreases (Value does, by
	// compensations).
	lastGross [numDedup][]uint64
	// likes, likeNet and liked are the latest like count, like counter
	// (ΣP − ΣN) and, per user of acct.likers, Liked, per video.
	likes   []uint64
	likeNet []int64
	likeN   []uint64 // ΣN of the like counter
	liked   [][]bool

	// hiClock is the latest reading (unix ms) the node ever took of its
	// clock; topHi is hiClock just after the current incarnation's last Top
	// call (0 if none): its top list is cached until 1 s past that.
	hiClock int64
	topHi   int64

	replica   crdt.ReplicaID
	replicas  int // replica IDs taken so far (1 + restarts that needed a new one)
	crashes   int
	cleanStop bool // the last incarnation was shut down cleanly (Close)
}

// openStore opens nd's in-memory store with deterministic replica IDs.
func (s *Sim) openStore(nd *node) error {
	o := store.InMemoryOptions()
	o.MemTableBytes = 1 << 20 // many stores per process; state is small
	o.CacheBytes = 1 << 20
	o.NewReplicaID = func() crdt.ReplicaID { return crdt.ReplicaID(s.rIDs.Uint64()) }
	st, err := store.Open(o)
	if err != nil {
		return fmt.Errorf("open store of %s: %w", nd.name, err)
	}
	nd.st = st
	return nil
}

// openNode starts a new incarnation of nd on its store, with replication,
// and starts its replication ticks. Peers are set by the caller.
func (s *Sim) openNode(nd *node) error {
	cfg := region.TestConfig()
	cfg.InMemory = false
	cfg.Region = s.regions[nd.region]
	cfg.Store = nd.st
	cfg.ManualCommit = true
	cfg.Clock = func() time.Time {
		t := s.nodeTime(nd)
		nd.hiClock = max(nd.hiClock, t.UnixMilli())
		return t
	}
	cfg.Durability = s.p.Durability
	cfg.DedupWindow = s.p.DedupWindow
	cfg.UserRate, cfg.UserBurst = s.p.UserRate, s.p.UserBurst
	cfg.CounterCache, cfg.CounterLogEpoch = s.p.CounterCache, s.p.LogEpoch
	n, err := region.Open(cfg)
	if err != nil {
		return fmt.Errorf("open node %s: %w", nd.name, err)
	}
	nd.inc++
	nd.topHi = 0
	ec := replication.DefaultConfig(replication.NodeID(nd.name))
	ec.SyncInterval = s.p.SyncInterval
	ec.RetryTimeout = s.p.RetryTimeout
	ec.RepairInterval = s.p.RepairInterval
	ec.LogCapacity = s.p.LogCapacity
	ec.Buckets = s.p.Buckets
	ec.MaxBatchKeys = s.p.BatchKeys
	ec.MaxInflight = s.p.Inflight
	// Epoch is left 0: the node takes its clock's unix nanoseconds, as in
	// production, skew and clock jumps included.
	err = n.EnableReplication(region.ReplicationConfig{
		Self:      nd.name,
		Engine:    ec,
		Transport: &endpoint{s: s, from: nd, inc: nd.inc},
	})
	if err != nil {
		n.Close()
		return fmt.Errorf("enable replication on %s: %w", nd.name, err)
	}
	id := n.Identity()
	if id.Reason != "" {
		nd.replicas++
		s.stats.replicaIDs++
	}
	switch {
	case nd.replica == 0:
	case id.Replica != nd.replica && (s.p.Durability == region.DurabilitySync || nd.cleanStop):
		s.failf("%s took a new replica ID after a restart (%s)", nd.name, id.Reason)
	case id.Replica == nd.replica && s.p.Durability == region.DurabilityAsync && !nd.cleanStop:
		s.failf("%s kept its replica ID after an unclean async shutdown", nd.name)
	}
	nd.replica = id.Replica
	nd.n, nd.up = n, true
	s.startTicks(nd)
	return nil
}

// startTicks ticks nd's replication every SyncInterval/2, at a random phase.
func (s *Sim) startTicks(nd *node) {
	every := max(s.p.SyncInterval/2, time.Millisecond)
	inc := nd.inc
	var tick func()
	tick = func() {
		if !nd.up || nd.inc != inc {
			return
		}
		nd.n.ReplicationTick()
		s.after(every, tick)
	}
	s.after(s.rNet.Between(0, every), tick)
}

// needCommit schedules nd's next group commit, unless one is due: writes
// arriving meanwhile join it (group commit), and a crash before it loses them.
func (s *Sim) needCommit(nd *node) {
	if nd.commitDue || !nd.up {
		return
	}
	nd.commitDue = true
	at := s.now + s.rDisk.Between(s.p.FsyncMin, s.p.FsyncMax)
	inc := nd.inc
	var commit func()
	commit = func() {
		if !nd.up || nd.inc != inc {
			return
		}
		if s.now < nd.stallUntil {
			s.at(nd.stallUntil+s.rDisk.Between(s.p.FsyncMin, s.p.FsyncMax), commit)
			return
		}
		nd.commitDue = false
		s.commit(nd)
	}
	s.at(max(at, nd.stallUntil), commit)
}

// commit steps nd's group committer: everything submitted so far becomes
// durable, and the submissions waiting on it are settled.
func (s *Sim) commit(nd *node) {
	nd.n.StepCommit()
	s.stats.commits++
	pending := nd.pending
	nd.pending = nil
	for _, sub := range pending {
		s.durable(sub)
	}
}

// crash abandons nd's incarnation without Close: its un-stepped batch is lost.
func (s *Sim) crash(nd *node, why string) {
	if !nd.up {
		return
	}
	s.sampleNode(nd, sampleFull) // what it durably had, to compare after the restart
	s.stats.evicted += nd.n.CountersEvicted()
	nd.up, nd.n = false, nil
	nd.inc++
	nd.commitDue = false
	nd.stallUntil = 0
	nd.crashes++
	nd.cleanStop = false
	for _, sub := range nd.pending {
		s.lost(sub)
	}
	nd.pending = nil
	s.tracef("crash %s (%s)", nd.name, why)
	s.membershipChanged()
}

// shutdown stops nd cleanly: Close writes the last batch, so everything
// submitted is durable and answered, and async durability may keep the
// replica ID.
func (s *Sim) shutdown(nd *node) {
	if !nd.up {
		return
	}
	if err := nd.n.Close(); err != nil {
		s.failf("close %s: %v", nd.name, err)
		return
	}
	pending := nd.pending
	nd.pending = nil
	for _, sub := range pending {
		s.durable(sub)
	}
	s.sampleNode(nd, sampleFull)
	s.stats.evicted += nd.n.CountersEvicted()
	nd.up, nd.n = false, nil
	nd.inc++
	nd.commitDue = false
	nd.stallUntil = 0
	nd.cleanStop = true
	s.tracef("shutdown %s (clean)", nd.name)
	s.membershipChanged()
}

// restart opens a new incarnation of nd on the same store.
func (s *Sim) restart(nd *node) {
	if nd.up {
		return
	}
	if err := s.openNode(nd); err != nil {
		s.failf("restart %s: %v", nd.name, err)
		return
	}
	nd.n.SetPeers(s.peersFor(nd)) // it learns the members on join
	s.tracef("restart %s replica=%s", nd.name, nd.replica)
	s.sampleNode(nd, sampleFull) // must not show less than before the crash
	s.membershipChanged()
}

// endpoint is a node incarnation's Transport into the simulated network.
type endpoint struct {
	s    *Sim
	from *node
	inc  int
}

var _ region.Transport = (*endpoint)(nil)

// Send enqueues payload for the node at addr; it never blocks.
func (e *endpoint) Send(addr string, payload []byte) error {
	if !e.from.up || e.from.inc != e.inc {
		return fmt.Errorf("sim: %s is down", e.from.name) // a dead incarnation (Close after crash)
	}
	e.s.net.send(e.from, addr, payload)
	return nil
}
