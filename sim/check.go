package sim

import (
	"fmt"
	"strings"
	"time"

	"github.com/tallyhq/tally/region"
)

// accounting is the simulator's own record of what the cluster must hold.
type accounting struct {
	// gross is, per video, the views answered counted:true whose batch
	// became durable: each is exactly one slot increment, so no replica
	// ever shows more (nor more counts ever made: Value + Compensated).
	gross []uint64
	// ref is, per video, the distinct (video, user, window) claims among
	// them: every replica must converge to it, which is exactly once across
	// regions (a view counted by two nodes after a failover is compensated).
	ref []uint64
	// claims counts durable counted views per (video, user, window), over
	// all nodes; more than one is a double count the claim rule must undo.
	claims map[claimKey]int
	// local is the same per node: more than one is a broken dedup (checked).
	local map[localKey]*submission
	// lostCounted are counted views whose node crashed before their batch
	// was durable (never acknowledged with sync durability).
	lostCounted int

	// convergedSince is, per video, when all replicas last became equal to
	// the reference (liveness phase); -1 while they are not.
	convergedSince []time.Duration

	maxDiv      uint64
	maxDivVideo int
	maxDivAt    time.Duration
}

type claimKey struct {
	video, user int
	window      uint64
}

type localKey struct {
	node int
	claimKey
}

func (a *accounting) init(videos int) {
	a.ref = make([]uint64, videos)
	a.gross = make([]uint64, videos)
	a.claims = map[claimKey]int{}
	a.local = map[localKey]*submission{}
	a.convergedSince = make([]time.Duration, videos)
	for i := range a.convergedSince {
		a.convergedSince[i] = -1
	}
}

// counted records a durable counted view and checks node-local dedup.
func (a *accounting) counted(s *Sim, sub *submission) {
	a.gross[sub.v.video]++
	ck := claimKey{video: sub.v.video, user: sub.v.u.idx, window: sub.window}
	if a.claims[ck]++; a.claims[ck] == 1 {
		a.ref[sub.v.video]++
	}
	lk := localKey{node: sub.node.idx, claimKey: ck}
	if first := a.local[lk]; first != nil {
		s.failf("%s counted %s by %s twice in dedup window %d (at %s and %s)",
			sub.node.name, s.videos[ck.video], sub.v.u.id, ck.window, fmtSec(first.at), fmtSec(sub.at))
		return
	}
	a.local[lk] = sub
}

// doubleCounted is the number of durable counted views beyond the first of
// each (video, user, window): what the claim rule had to compensate.
func (a *accounting) doubleCounted() int {
	n := 0
	for _, c := range a.claims {
		n += c - 1
	}
	return n
}

const (
	sampleEvery    = 100 * time.Millisecond // safety checks and plot points
	livenessSample = 10 * time.Millisecond  // convergence is measured this finely
)

// startSampling checks every live node's durable counts every sampleEvery.
func (s *Sim) startSampling() {
	var tick func()
	tick = func() {
		if s.phase == phaseDone {
			return
		}
		s.sampleAll()
		s.after(sampleEvery, tick)
	}
	s.after(sampleEvery, tick)
}

func (s *Sim) sampleAll() {
	for _, nd := range s.nodes {
		if nd.up {
			s.sampleNode(nd)
		}
	}
	s.divergence()
	if s.plot != nil {
		s.plotSample()
	}
}

// sampleNode reads nd's durable count of every video and checks that the
// counts ever made (Value + Compensated) never went backwards (across
// restarts too) and that no count exceeds the views durably counted.
func (s *Sim) sampleNode(nd *node) {
	for vi, video := range s.videos {
		c, err := nd.n.Views(video)
		if err != nil {
			s.failf("%s: read %s: %v", nd.name, video, err)
			return
		}
		gross := c.Value + c.Compensated
		if gross < nd.lastGross[vi] {
			s.failf("%s: counts of %s ever made went backwards: %d, then %d (%d compensated)", nd.name, video, nd.lastGross[vi], gross, c.Compensated)
			return
		}
		if gross > s.acct.gross[vi] {
			s.failf("%s: %s has %d counts made, above the %d views durably counted", nd.name, video, gross, s.acct.gross[vi])
			return
		}
		nd.last[vi], nd.lastGross[vi] = c.Value, gross
	}
}

// divergence updates the largest spread of one video's count across the
// live replicas (max - min), from their last samples.
func (s *Sim) divergence() {
	for vi := range s.videos {
		lo, hi, any := uint64(0), uint64(0), false
		for _, nd := range s.nodes {
			if !nd.up {
				continue
			}
			v := nd.last[vi]
			if !any || v < lo {
				lo = v
			}
			if !any || v > hi {
				hi = v
			}
			any = true
		}
		if any && hi-lo > s.acct.maxDiv {
			s.acct.maxDiv, s.acct.maxDivVideo, s.acct.maxDivAt = hi-lo, vi, s.now
		}
	}
}

// convergedAll samples every node and reports whether every live replica
// holds the reference count of every video; it tracks per video since when.
func (s *Sim) convergedAll() bool {
	all := true
	for _, nd := range s.nodes {
		if !nd.up {
			all = false
			continue
		}
		s.sampleNode(nd)
	}
	for vi := range s.videos {
		ok := true
		for _, nd := range s.nodes {
			if !nd.up || nd.last[vi] != s.acct.ref[vi] {
				ok = false
				break
			}
		}
		switch {
		case !ok:
			s.acct.convergedSince[vi] = -1
			all = false
		case s.acct.convergedSince[vi] < 0:
			s.acct.convergedSince[vi] = s.now
		}
	}
	return all && s.fail == nil
}

// quiet reports whether no client request can still change a count: none
// in transit to a node, none waiting for a group commit.
func (s *Sim) quiet() bool {
	if s.stats.inTransit > 0 {
		return false
	}
	for _, nd := range s.nodes {
		if len(nd.pending) > 0 {
			return false
		}
	}
	return true
}

// divergenceDetail describes the videos whose replicas differ from the
// reference (at most three), for a failure message.
func (s *Sim) divergenceDetail() string {
	var parts []string
	for vi, video := range s.videos {
		var b strings.Builder
		bad := false
		for _, nd := range s.nodes {
			v := "down"
			if nd.up {
				v = fmt.Sprint(nd.last[vi])
				bad = bad || nd.last[vi] != s.acct.ref[vi]
			} else {
				bad = true
			}
			fmt.Fprintf(&b, " %s=%s", nd.name, v)
		}
		if bad {
			parts = append(parts, fmt.Sprintf("%s ref=%d:%s", video, s.acct.ref[vi], b.String()))
		}
		if len(parts) == 3 {
			break
		}
	}
	if !s.quiet() {
		parts = append(parts, "client requests outstanding")
	}
	return strings.Join(parts, "; ")
}

// checkEnd runs the end-of-run checks that need the whole history.
func (s *Sim) checkEnd() {
	if s.fail != nil {
		return
	}
	for _, nd := range s.nodes {
		if nd.up && !nd.n.Ready() {
			s.failf("%s is not ready (a group commit failed)", nd.name)
			return
		}
	}
	if s.p.Durability == region.DurabilitySync {
		for _, sub := range s.subs {
			if sub.acked && sub.res.Counted && !sub.durable {
				s.failf("acknowledged view of %s by %s at %s was never durable", s.videos[sub.v.video], sub.v.u.id, sub.node.name)
				return
			}
		}
	}
}

// ackedLost counts counted views whose answer reached the client and whose
// batch was then lost (possible only with async durability).
func (s *Sim) ackedLost() int {
	n := 0
	for _, sub := range s.subs {
		if sub.acked && sub.lost && sub.res.Counted {
			n++
		}
	}
	return n
}
