package sim

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tallyhq/tally/replication"
)

// stats are the run's counters, for progress lines and the report.
type stats struct {
	// Network.
	msgs, bytes                 uint64
	msgsByKind                  [replication.KindRepairAck + 1]uint64
	delivered                   uint64
	dropLoss, dropCut, dropDown uint64
	dropUnknown                 uint64
	duplicated, reordered, held uint64
	rejectUnknown, rejectStale  uint64

	// Faults.
	faults        map[string]int
	faultsSkipped int

	// Nodes.
	commits    uint64
	replicaIDs int

	// Clients.
	views, attempts, failovers       int
	counted, duplicates, rateLimited int
	acked, ackedCounted              int
	timeouts, refused, gaveUp        int
	lateReplies                      int
	inTransit                        int
}

// Result is the outcome of one seed.
type Result struct {
	Seed   uint64
	Params Params // as run (after swarm)
	Passed bool
	// Failure is the first broken invariant, with its simulated time.
	Failure string
	// Converge is the simulated time from the heal until every replica held
	// the reference count of every video; per video: ConvergeVideos.
	Converge       time.Duration
	ConvergeVideos []time.Duration
	MaxDivergence  uint64
	DoubleCounted  int
	AckedLost      int
	LostCounted    int
	Acked          int
	Reference      uint64
	Messages       uint64
	Bytes          uint64
}

func (s *Sim) result() Result {
	r := Result{
		Seed:          s.p.Seed,
		Params:        s.p,
		Passed:        s.fail == nil,
		Converge:      -1,
		MaxDivergence: s.acct.maxDiv,
		DoubleCounted: s.acct.doubleCounted(),
		AckedLost:     s.ackedLost(),
		LostCounted:   s.acct.lostCounted,
		Acked:         s.stats.acked,
		Messages:      s.stats.msgs,
		Bytes:         s.stats.bytes,
	}
	for _, v := range s.acct.ref {
		r.Reference += v
	}
	if s.fail != nil {
		r.Failure = s.fail.reason + " at t=" + fmtSec(s.fail.at)
	}
	if s.phase == phaseDone {
		for _, c := range s.acct.convergedSince {
			r.ConvergeVideos = append(r.ConvergeVideos, max(c-s.healAt, 0))
		}
		r.Converge = slices.Max(append([]time.Duration{0}, r.ConvergeVideos...))
	}
	return r
}

// progress prints one compact line about the run so far.
func (s *Sim) progress() {
	up := 0
	for _, nd := range s.nodes {
		if nd.up {
			up++
		}
	}
	cut, clogged := s.net.cutLinks()
	var ref uint64
	for _, v := range s.acct.ref {
		ref += v
	}
	s.printf("t=%s views=%d acked=%d ref=%d maxdiv=%d msgs=%d up=%d/%d cut=%d clogged=%d\n",
		fmtSec(s.now), s.stats.views, s.stats.acked, ref, s.acct.maxDiv, s.stats.msgs, up, len(s.nodes), cut, clogged)
}

// report prints the final report and the verdict.
func (s *Sim) report(r Result, base Params) {
	st := &s.stats
	if r.Converge >= 0 {
		s.printf("converged %s after heal (t=%s)\n", fmtSec(r.Converge), fmtSec(s.endAt))
	}
	s.printf("report seed=%d\n", s.p.Seed)
	if len(r.ConvergeVideos) > 0 {
		sorted := slices.Clone(r.ConvergeVideos)
		slices.Sort(sorted)
		s.printf("  convergence after heal: p50=%s p99=%s max=%s (%d videos)\n",
			fmtSec(percentile(sorted, 50)), fmtSec(percentile(sorted, 99)), fmtSec(sorted[len(sorted)-1]), len(sorted))
	} else {
		s.printf("  convergence after heal: none\n")
	}
	s.printf("  max divergence: %d views (%s at t=%s)\n", s.acct.maxDiv, s.videos[s.acct.maxDivVideo], fmtSec(s.acct.maxDivAt))
	var kinds []string
	for k := replication.KindDelta; k <= replication.KindRepairAck; k++ {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, st.msgsByKind[k]))
	}
	s.printf("  messages: sent=%d bytes=%d delivered=%d (%s)\n", st.msgs, st.bytes, st.delivered, strings.Join(kinds, " "))
	s.printf("  network: lost=%d cut=%d to-down-node=%d duplicated=%d reordered=%d held-by-clog=%d refused-unknown-peer=%d refused-stale-epoch=%d\n",
		st.dropLoss, st.dropCut, st.dropDown, st.duplicated, st.reordered, st.held, st.rejectUnknown, st.rejectStale)
	var fs []string
	for _, k := range faultKinds {
		fs = append(fs, fmt.Sprintf("%s=%d", k, st.faults[k]))
	}
	s.printf("  faults: %s skipped=%d\n", strings.Join(fs, " "), st.faultsSkipped)
	s.printf("  nodes: commits=%d replica-ids=%d\n", st.commits, st.replicaIDs)
	s.printf("  clients: views=%d attempts=%d failovers=%d timeouts=%d refused=%d gave-up=%d late-replies=%d\n",
		st.views, st.attempts, st.failovers, st.timeouts, st.refused, st.gaveUp, st.lateReplies)
	s.printf("  fates: counted=%d duplicate=%d rate_limited=%d; acked=%d (counted %d)\n",
		st.counted, st.duplicates, st.rateLimited, st.acked, st.ackedCounted)
	s.printf("  reference=%d doubleCounted=%d (compensated) ackedLost=%d lostUnacked=%d\n",
		r.Reference, r.DoubleCounted, r.AckedLost, r.LostCounted-r.AckedLost)
	if s.diagnosis != "" {
		s.printf("%s", s.diagnosis)
	}
	if r.Passed {
		s.printf("PASSED\n")
	} else {
		s.printf("FAILED %s reproduce: %s\n", r.Failure, base.Reproduce(s.p.Seed))
	}
}

// percentile returns the p-th percentile (nearest rank) of sorted values.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

// replicationStatus describes every live node's view of its peers, to
// diagnose a cluster that did not converge.
func (s *Sim) replicationStatus() string {
	var b strings.Builder
	printf := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	printf("  replication status at t=%s:\n", fmtSec(s.now))
	for _, nd := range s.nodes {
		if !nd.up {
			printf("    %s down\n", nd.name)
			continue
		}
		st := nd.n.ClusterStatus()
		e := st.Engine
		printf("    %s epoch=%d head=%d log-start=%d log-keys=%d keys=%d send-errors=%d\n",
			nd.name, e.Epoch, e.Head, e.LogStart, e.LogKeys, e.Keys, st.SendErrors)
		for _, p := range e.Peers {
			printf("      -> %s epoch=%d cursor=%d behind=%d inflight=%d repairing=%v serving=%v repairs=%d served=%d sent=%d recv=%d lag=%.1fs\n",
				p.Peer, p.Epoch, p.Cursor, p.Behind, p.Inflight, p.Repairing, p.Serving, p.Repairs, p.Served, p.MessagesSent, p.MessagesReceived, p.LagSeconds)
		}
	}
	return b.String()
}
