package sim

import (
	"container/heap"
	"fmt"
	"io"
	"strconv"
	"time"
)

// start is the simulated wall clock at time 0: 30 s before a UTC midnight,
// so that every run crosses a 24 h dedup window boundary.
var start = time.Date(2030, 1, 1, 23, 59, 30, 0, time.UTC)

var regionNames = []string{"us", "eu", "ap", "sa", "af", "me", "oc", "ca", "in"}

type phase uint8

const (
	phaseSafety   phase = iota // workload and faults
	phaseLiveness              // healed and quiet: replicas must converge
	phaseDone
)

// Sim is one simulation run. It is not safe for concurrent use: everything
// happens on the caller's goroutine.
type Sim struct {
	p   Params
	out io.Writer

	now   time.Duration // simulated time since start
	queue eventQueue
	seq   uint64

	// One PRNG per subsystem, each from its own sub-seed.
	rNet, rFault, rWork, rClient, rClock, rDisk, rMember, rIDs, rKind *rng

	regions []string
	nodes   []*node
	byAddr  map[string]*node
	byName  map[string]*node
	videos  []string
	users   []*user
	views   []*view
	subs    []*submission

	net    network
	faults []*fault
	// isolated counts the active isolations of each region (membership
	// treats an isolated region's nodes as failed, across the cut).
	isolated []int
	// flapped counts the false failure detections of each node in progress.
	flapped  []int
	faultsOn bool // per-message faults (loss, dup, reorder) apply

	phase  phase
	healAt time.Duration
	endAt  time.Duration

	acct    accounting
	stats   stats
	samples int // sampleAll calls so far
	fail    *failure
	plot    *plotData
	// diagnosis is printed with a failure's report (replication status).
	diagnosis string

	// derived is the last complaint of the checks of state derived from
	// the counters (buckets, unique viewers, trending) and derivedNext when
	// they may run again; topChecked and topSkipped count the nodes whose
	// top list the last of them compared, or could not (window edge).
	derived                string
	derivedNext            time.Duration
	topChecked, topSkipped int
}

// failure is the first invariant broken.
type failure struct {
	at     time.Duration
	reason string
}

// event is something that happens at a simulated time; seq breaks ties in
// the order events were scheduled, which keeps runs deterministic.
type event struct {
	at  time.Duration
	seq uint64
	fn  func()
}

type eventQueue []*event

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return e
}

// at schedules fn at simulated time t (not before now).
func (s *Sim) at(t time.Duration, fn func()) {
	s.seq++
	heap.Push(&s.queue, &event{at: max(t, s.now), seq: s.seq, fn: fn})
}

// after schedules fn d from now.
func (s *Sim) after(d time.Duration, fn func()) { s.at(s.now+d, fn) }

// runUntil runs every event up to and including t, then sets the clock to t.
// It stops early when an invariant fails.
func (s *Sim) runUntil(t time.Duration) {
	for s.fail == nil && len(s.queue) > 0 && s.queue[0].at <= t {
		e := heap.Pop(&s.queue).(*event)
		s.now = e.at
		e.fn()
	}
	if s.fail == nil {
		s.now = max(s.now, t)
	}
}

// failf records the first invariant failure; the run stops at the next event.
func (s *Sim) failf(format string, a ...any) {
	if s.fail != nil {
		return
	}
	s.fail = &failure{at: s.now, reason: fmt.Sprintf(format, a...)}
}

func (s *Sim) printf(format string, a ...any) {
	if s.out != nil {
		fmt.Fprintf(s.out, format, a...)
	}
}

// tracef prints a fault or notable event with its simulated time, under --trace.
func (s *Sim) tracef(format string, a ...any) {
	if s.p.Trace {
		s.printf("  %9s "+format+"\n", append([]any{fmtSec(s.now)}, a...)...)
	}
}

// newSim builds the cluster (stores open, nodes up, peers known) at time 0,
// with regions named from names (the default names if nil).
func newSim(p Params, names []string, out io.Writer, withPlot bool) (*Sim, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	s := &Sim{
		p:        p,
		out:      out,
		rNet:     newRNG(subSeed(p.Seed, "net")),
		rFault:   newRNG(subSeed(p.Seed, "faults")),
		rWork:    newRNG(subSeed(p.Seed, "workload")),
		rClient:  newRNG(subSeed(p.Seed, "clients")),
		rClock:   newRNG(subSeed(p.Seed, "clock")),
		rDisk:    newRNG(subSeed(p.Seed, "disk")),
		rMember:  newRNG(subSeed(p.Seed, "membership")),
		rIDs:     newRNG(subSeed(p.Seed, "replica-ids")),
		rKind:    newRNG(subSeed(p.Seed, "event-kinds")),
		byAddr:   map[string]*node{},
		byName:   map[string]*node{},
		faultsOn: true,
		endAt:    -1,
	}
	if withPlot {
		s.plot = &plotData{}
	}
	if names == nil {
		names = regionNames[:p.Regions]
	}
	s.regions = names
	s.stats.faults = map[string]int{}
	s.isolated = make([]int, p.Regions)
	for i := range p.Videos {
		s.videos = append(s.videos, "v"+strconv.Itoa(i+1))
	}
	s.acct.init(len(s.videos))
	for r := range s.regions {
		for i := range p.Nodes {
			nd := &node{
				idx:     len(s.nodes),
				name:    s.regions[r] + "-" + strconv.Itoa(i+1),
				region:  r,
				likes:   make([]uint64, len(s.videos)),
				likeNet: make([]int64, len(s.videos)),
				likeN:   make([]uint64, len(s.videos)),
				liked:   make([][]bool, len(s.videos)),
			}
			for ev := range numDedup {
				nd.last[ev] = make([]uint64, len(s.videos))
				nd.lastGross[ev] = make([]uint64, len(s.videos))
			}
			nd.addr = nd.name + ":7947"
			if p.Skew > 0 {
				nd.skew = s.rClock.Between(-p.Skew, p.Skew)
			}
			s.nodes = append(s.nodes, nd)
			s.byAddr[nd.addr] = nd
			s.byName[nd.name] = nd
		}
	}
	s.flapped = make([]int, len(s.nodes))
	s.net.init(s)
	for _, nd := range s.nodes {
		if err := s.openStore(nd); err != nil {
			s.close()
			return nil, err
		}
	}
	for _, nd := range s.nodes {
		if err := s.openNode(nd); err != nil {
			s.close()
			return nil, err
		}
	}
	for _, nd := range s.nodes {
		nd.n.SetPeers(s.peersFor(nd))
	}
	return s, nil
}

// close shuts every live node down cleanly and closes every store.
func (s *Sim) close() {
	for _, nd := range s.nodes {
		if nd.n != nil && nd.up {
			nd.n.Close()
			s.stats.evicted += nd.n.CountersEvicted()
		}
		nd.n, nd.up = nil, false
		if nd.st != nil {
			nd.st.Close()
			nd.st = nil
		}
	}
}

// nodeTime is nd's clock: simulated time plus its skew.
func (s *Sim) nodeTime(nd *node) time.Time { return start.Add(s.now + nd.skew) }

// run executes a whole seeded run: safety phase, heal, liveness phase.
func (s *Sim) run() {
	s.printf("tally sim %s\n", s.p)
	s.scheduleFaults()
	s.startWorkload()
	s.startSampling()
	for t := time.Duration(0); t < s.p.Duration && s.fail == nil; {
		next := min(t+progressEvery, s.p.Duration)
		s.runUntil(next)
		t = next
		if s.fail == nil && t < s.p.Duration {
			s.progress()
		}
	}
	if s.fail == nil {
		s.progress()
		s.heal()
		s.liveness()
	}
	s.checkEnd()
	if s.fail != nil && s.phase == phaseLiveness {
		s.diagnosis = s.replicationStatus()
	}
	s.close()
}

const progressEvery = 10 * time.Second

// liveness runs the healed, quiet cluster until every replica equals the
// reference for every video and no client request is outstanding, or until
// ConvergeWithin has passed.
func (s *Sim) liveness() {
	deadline := s.healAt + s.p.ConvergeWithin
	for s.fail == nil {
		s.runUntil(s.now + livenessSample)
		if s.fail != nil {
			return
		}
		if s.settled() {
			s.endAt = s.now
			s.phase = phaseDone
			return
		}
		if s.now >= deadline {
			s.failf("not converged %s after heal: %s", fmtSec(s.p.ConvergeWithin), s.divergenceDetail())
			return
		}
	}
}
