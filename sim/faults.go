package sim

import (
	"fmt"
	"time"
)

// Fault kinds, as counted in the report.
const (
	faultIsolate    = "isolate"     // a region cut off from all others, both ways
	faultOneWay     = "one-way"     // messages from region A to region B dropped, B to A pass
	faultPair       = "pair"        // regions A and B cut from each other, both ways
	faultClog       = "clog"        // random links hold their messages; restored one by one
	faultCrash      = "crash"       // a node crashes, restarts later
	faultRegionDown = "region-down" // every node of a region crashes, restart later
	faultClockJump  = "clock-jump"  // a node's clock jumps
	faultStall      = "stall"       // a node's disk stalls: no group commit for a while
	faultFlap       = "flap"        // membership wrongly declares a live node failed
	faultShutdown   = "shutdown"    // a node shuts down cleanly, restarts later
)

var faultKinds = []string{faultIsolate, faultOneWay, faultPair, faultClog, faultCrash, faultShutdown, faultRegionDown, faultClockJump, faultStall, faultFlap}

// fault is one scheduled fault.
type fault struct {
	kind   string
	at     time.Duration
	dur    time.Duration
	desc   string
	links  [][2]int // directed links cut or clogged
	region int      // isolate, region-down
	node   *node    // crash, clock-jump, stall
	jump   time.Duration
	active bool
	endAt  time.Duration
}

func (f *fault) partition() bool {
	return f.kind == faultIsolate || f.kind == faultOneWay || f.kind == faultPair || f.kind == faultClog
}

// scheduleFaults draws the whole fault schedule of the safety phase up
// front (Poisson arrivals per kind, from the faults sub-seed) and schedules it.
func (s *Sim) scheduleFaults() {
	r := s.rFault
	arrivals := func(perMinute float64, mk func(at time.Duration)) {
		if perMinute <= 0 {
			return
		}
		mean := time.Duration(float64(time.Minute) / perMinute)
		for t := r.Exp(mean); t < s.p.Duration; t += r.Exp(mean) {
			mk(t)
		}
	}
	regions := len(s.regions)
	arrivals(s.p.Partitions, func(at time.Duration) {
		f := &fault{at: at, dur: r.Between(time.Second, 10*time.Second)}
		kind := faultClog
		if regions > 1 {
			kind = []string{faultIsolate, faultOneWay, faultPair, faultClog}[r.Intn(4)]
		}
		f.kind = kind
		switch kind {
		case faultIsolate:
			f.region = r.Intn(regions)
			f.links = s.regionLinks(func(a, b int) bool { return (a == f.region) != (b == f.region) })
			f.desc = s.regions[f.region]
		case faultOneWay, faultPair:
			a := r.Intn(regions)
			b := (a + 1 + r.Intn(regions-1)) % regions
			if kind == faultOneWay {
				f.links = s.regionLinks(func(x, y int) bool { return x == a && y == b })
				f.desc = s.regions[a] + "->" + s.regions[b]
			} else {
				f.links = s.regionLinks(func(x, y int) bool { return x == a && y == b || x == b && y == a })
				f.desc = s.regions[a] + "<->" + s.regions[b]
			}
		case faultClog:
			for i := range s.nodes {
				for j := range s.nodes {
					if i != j && r.Chance(0.25) {
						f.links = append(f.links, [2]int{i, j})
					}
				}
			}
			if len(f.links) == 0 && len(s.nodes) > 1 {
				f.links = append(f.links, [2]int{0, 1})
			}
			f.desc = fmt.Sprintf("%d links", len(f.links))
		}
		s.faults = append(s.faults, f)
	})
	arrivals(s.p.Crashes, func(at time.Duration) {
		nd := s.nodes[r.Intn(len(s.nodes))]
		kind := faultCrash
		if r.Chance(s.p.CleanRestarts) {
			kind = faultShutdown
		}
		s.faults = append(s.faults, &fault{kind: kind, at: at, dur: r.Between(500*time.Millisecond, 8*time.Second), node: nd, desc: nd.name})
	})
	arrivals(s.p.RegionDowns, func(at time.Duration) {
		reg := r.Intn(regions)
		s.faults = append(s.faults, &fault{kind: faultRegionDown, at: at, dur: r.Between(3*time.Second, 15*time.Second), region: reg, desc: s.regions[reg]})
	})
	arrivals(s.p.ClockJumps, func(at time.Duration) {
		nd := s.nodes[r.Intn(len(s.nodes))]
		j := r.Between(-s.p.MaxJump, s.p.MaxJump)
		s.faults = append(s.faults, &fault{kind: faultClockJump, at: at, node: nd, jump: j, desc: fmt.Sprintf("%s %+v", nd.name, j)})
	})
	arrivals(s.p.Stalls, func(at time.Duration) {
		nd := s.nodes[r.Intn(len(s.nodes))]
		s.faults = append(s.faults, &fault{kind: faultStall, at: at, dur: r.Between(500*time.Millisecond, 4*time.Second), node: nd, desc: nd.name})
	})
	arrivals(s.p.Flaps, func(at time.Duration) {
		nd := s.nodes[r.Intn(len(s.nodes))]
		s.faults = append(s.faults, &fault{kind: faultFlap, at: at, dur: r.Between(time.Second, 6*time.Second), node: nd, desc: nd.name})
	})
	for _, f := range s.faults {
		s.at(f.at, func() { s.startFault(f) })
	}
}

// regionLinks lists the directed node links (a, b) whose regions match.
func (s *Sim) regionLinks(match func(ra, rb int) bool) [][2]int {
	var links [][2]int
	for _, a := range s.nodes {
		for _, b := range s.nodes {
			if a != b && match(a.region, b.region) {
				links = append(links, [2]int{a.idx, b.idx})
			}
		}
	}
	return links
}

func (s *Sim) startFault(f *fault) {
	if s.phase != phaseSafety {
		return
	}
	s.stats.faults[f.kind]++
	switch f.kind {
	case faultIsolate, faultOneWay, faultPair, faultClog:
		s.applyPartition(f)
	case faultCrash, faultShutdown:
		if !f.node.up {
			s.stats.faultsSkipped++
			return
		}
		if f.kind == faultShutdown {
			s.shutdown(f.node)
		} else {
			s.crash(f.node, "crash fault")
		}
		s.after(f.dur, func() {
			if s.phase == phaseSafety {
				s.restart(f.node)
			}
		})
	case faultRegionDown:
		s.tracef("region %s down for %s", f.desc, fmtSec(f.dur))
		for _, nd := range s.nodes {
			if nd.region == f.region {
				s.crash(nd, "region down")
			}
		}
		f.active, f.endAt = true, s.now+f.dur
		s.after(f.dur, func() {
			if s.phase != phaseSafety {
				return
			}
			f.active = false
			for _, nd := range s.nodes {
				if nd.region == f.region {
					s.restart(nd)
				}
			}
		})
	case faultClockJump:
		f.node.skew += f.jump
		s.tracef("clock of %s jumps %+v (skew now %+v)", f.node.name, f.jump, f.node.skew)
	case faultStall:
		f.node.stallUntil = max(f.node.stallUntil, s.now+f.dur)
		s.tracef("disk of %s stalls for %s", f.node.name, fmtSec(f.dur))
	case faultFlap:
		// The false detection is the fault: every other node drops the
		// peer now, and re-admits it after a detection delay once it ends.
		s.flapped[f.node.idx]++
		f.active = true
		s.tracef("membership declares %s failed for %s", f.node.name, fmtSec(f.dur))
		s.refreshMembership()
		s.after(f.dur, func() {
			if f.active {
				f.active = false
				s.flapped[f.node.idx]--
				s.membershipChanged()
			}
		})
	}
	if s.plot != nil && (f.partition() || f.kind == faultRegionDown) {
		s.plot.faults = append(s.plot.faults, f)
	}
}

func (s *Sim) applyPartition(f *fault) {
	clog := f.kind == faultClog
	f.active, f.endAt = true, s.now+f.dur
	s.net.setLinks(f.links, clog, +1)
	s.tracef("partition %s %s for %s", f.kind, f.desc, fmtSec(f.dur))
	if f.kind == faultIsolate {
		s.isolated[f.region]++
		s.membershipChanged()
	}
	if !clog {
		s.after(f.dur, func() { s.endPartition(f) })
		return
	}
	// Clogged links are restored one by one over the fault's duration.
	n := len(f.links)
	for i := range f.links {
		l := f.links[i : i+1]
		s.after(f.dur*time.Duration(i+1)/time.Duration(n), func() {
			if f.active {
				s.net.setLinks(l, true, -1)
			}
			if i == n-1 {
				f.active = false
				s.tracef("clog %s restored", f.desc)
			}
		})
	}
}

func (s *Sim) endPartition(f *fault) {
	if !f.active {
		return
	}
	f.active = false
	s.net.setLinks(f.links, false, -1)
	s.tracef("partition %s %s healed", f.kind, f.desc)
	if f.kind == faultIsolate {
		s.isolated[f.region]--
		s.membershipChanged()
	}
}

// heal ends the safety phase: every fault stops at once.
func (s *Sim) heal() {
	s.phase = phaseLiveness
	s.healAt = s.now
	s.faultsOn = false
	for _, f := range s.faults {
		if f.active {
			f.active = false
			f.endAt = s.now
		}
	}
	for i := range s.isolated {
		s.isolated[i] = 0
	}
	for i := range s.flapped {
		s.flapped[i] = 0
	}
	s.net.healAll()
	for _, nd := range s.nodes {
		nd.stallUntil = 0
		if !nd.up {
			s.restart(nd)
		}
	}
	s.membershipChanged()
	s.printf("heal at %s: partitions healed, %d nodes up, loss and duplication off\n", fmtSec(s.now), len(s.nodes))
}
