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
	evicted    uint64 // counters evicted by incarnations that ended

	// Clients.
	views, attempts, failovers       int
	counted, duplicates, rateLimited int
	acked, ackedCounted              int
	timeouts, refused, gaveUp        int
	lateReplies                      int
	inTransit                        int
	// Per kind of event (view, share, like, unlike): sent, and answered
	// counted or duplicate.
	ops, kindCounted, kindDuplicate [numOpKinds]int
	// likeIntentsChecked are the (video, user) pairs whose final like
	// state the run could predict and checked; likeLastAckOverridden the
	// pairs whose last like event was acknowledged (counted or duplicate)
	// and yet the converged state is the other one: a region that had not
	// heard of the user's latest transitions answered it (see
	// testdata/known_bugs/stale_like_lost.txt).
	likeIntentsChecked, likeLastAckOverridden int
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
	DoubleCounted  int // views
	AckedLost      int
	LostCounted    int
	Acked          int
	Reference      uint64 // views
	// Shares is the reference share count (all videos), SharesDoubleCounted
	// the shares counted twice and compensated.
	Shares              uint64
	SharesDoubleCounted int
	// Likes is the converged like count (all videos); LikeTransitions the
	// likes and unlikes that changed a user's state where they were made;
	// Compensations the compensations per event type (view, share, like)
	// in the nodes' raw event logs, read once converged.
	Likes           uint64
	LikeTransitions int
	Compensations   [numEvents]uint64
	Messages        uint64
	Bytes           uint64
	// Evicted is the counters the nodes evicted from memory (read back
	// from their stores on next use), over every incarnation.
	Evicted uint64
}

func (s *Sim) result() Result {
	r := Result{
		Seed:          s.p.Seed,
		Params:        s.p,
		Passed:        s.fail == nil,
		Converge:      -1,
		MaxDivergence: s.acct.maxDiv,
		DoubleCounted: s.acct.doubleCounted(evView),
		AckedLost:     s.ackedLost(),
		LostCounted:   s.acct.lostCounted,
		Acked:         s.stats.acked,
		Messages:      s.stats.msgs,
		Bytes:         s.stats.bytes,
	}
	for _, v := range s.acct.ref[evView] {
		r.Reference += v
	}
	for _, v := range s.acct.ref[evShare] {
		r.Shares += v
	}
	r.SharesDoubleCounted = s.acct.doubleCounted(evShare)
	r.LikeTransitions = s.acct.likeTransitions
	r.Compensations = s.acct.compensations
	r.Evicted = s.stats.evicted
	for _, nd := range s.nodes {
		if nd.n != nil && nd.up {
			r.Evicted += nd.n.CountersEvicted()
		}
	}
	if s.fail != nil {
		r.Failure = s.fail.reason + " at t=" + fmtSec(s.fail.at)
	}
	if s.phase == phaseDone {
		r.Likes = s.acct.likes
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
	var ref, shares uint64
	for _, v := range s.acct.ref[evView] {
		ref += v
	}
	for _, v := range s.acct.ref[evShare] {
		shares += v
	}
	st := &s.stats
	s.printf("t=%s views=%d shares=%d likes=%d acked=%d ref=%d shared=%d transitions=%d maxdiv=%d msgs=%d up=%d/%d cut=%d clogged=%d\n",
		fmtSec(s.now), st.views, st.ops[opShare], st.ops[opLike]+st.ops[opUnlike], st.acked, ref, shares, s.acct.likeTransitions,
		s.acct.maxDiv, st.msgs, up, len(s.nodes), cut, clogged)
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
	var kinds2 []string
	for k := range numOpKinds {
		kinds2 = append(kinds2, fmt.Sprintf("%s=%d (counted %d, duplicate %d)", k, st.ops[k], st.kindCounted[k], st.kindDuplicate[k]))
	}
	s.printf("  events: %s\n", strings.Join(kinds2, " "))
	s.printf("  reference=%d doubleCounted=%d (compensated) ackedLost=%d lostUnacked=%d\n",
		r.Reference, r.DoubleCounted, r.AckedLost, r.LostCounted-r.AckedLost)
	s.printf("  shares: reference=%d doubleCounted=%d; likes: converged=%d transitions=%d users-checked=%d last-ack-overridden=%d\n",
		r.Shares, r.SharesDoubleCounted, r.Likes, r.LikeTransitions, st.likeIntentsChecked, st.likeLastAckOverridden)
	if s.phase == phaseDone {
		s.printf("  compensations (raw event logs): view=%d share=%d like=%d; counters evicted from memory: %d\n", r.Compensations[evView], r.Compensations[evShare], r.Compensations[evLike], r.Evicted)
		s.printf("  derived state: buckets = totals, unique viewers = reference sketch, top(view, %s) checked on %d nodes (%d outside the window)\n",
			topWindow, s.topChecked, s.topSkipped)
	}
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
