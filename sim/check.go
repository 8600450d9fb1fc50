package sim

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/region"
	"github.com/tallyhq/tally/store"
)

// accounting is the simulator's own record of what the cluster must hold.
type accounting struct {
	// gross is, per deduplicated event type (view, share) and video, the
	// events answered counted:true whose batch became durable: each is
	// exactly one slot increment, so no replica ever shows more (nor more
	// counts ever made: Value + Compensated).
	gross [numDedup][]uint64
	// ref is, per event type and video, the distinct (video, user, window)
	// claims among them: every replica must converge to it, which is exactly
	// once across regions (an event counted by two nodes after a failover is
	// compensated).
	ref [numDedup][]uint64
	// claims counts durable counted events per (event, video, user, window),
	// over all nodes; more than one is a double count the claim rule must undo.
	claims map[claimKey]int
	// local is the same per node: more than one is a broken dedup (checked).
	local map[localKey]*submission
	// lostCounted are counted events whose node crashed before their batch
	// was durable (never acknowledged with sync durability).
	lostCounted int

	// likers is, per video, every user who ever sent a like or an unlike of
	// it, by user index ascending: the users whose Liked the checks compare.
	likers [][]int
	// likeTransitions are the durable counted likes and unlikes (each one
	// transition made by its node, one slot increment of its P or N), and
	// likeMade the same per video.
	likeTransitions int
	likeMade        []uint64

	// ingest spans the node clocks (unix ms) of every durable counted
	// event: every time bucket any node changed lies in it (a compensation
	// changes the buckets of the ingest time of the event it takes back).
	minIngest, maxIngest int64

	// sketch is, per video, the reference unique-viewer sketch: every
	// (video, user) of a durable counted view, inserted at its
	// crdt.HLLPosition; viewers counts them exactly.
	sketch  []*[crdt.HLLRegisters]uint8
	viewers []int
	viewed  map[[2]int]bool
	hllEst  []uint64 // estimate of sketch, valid unless hllStale
	hllOld  []bool

	// compensations are, per event type, the compensations logged in the
	// raw event logs of every node (read once converged); likeComps the
	// like compensations per video, likeReapplied the likes and unlikes
	// nodes made again for a lost latest intent (store.FateReapplied).
	compensations [numEvents]uint64
	likeComps     []uint64
	likeReapplied []uint64
	// likes is the converged like count, over all videos.
	likes uint64

	// convergedSince is, per video, when all replicas last became equal to
	// the reference (liveness phase); -1 while they are not.
	convergedSince []time.Duration

	maxDiv      uint64
	maxDivVideo int
	maxDivAt    time.Duration
}

type claimKey struct {
	event, video, user int
	window             uint64
}

type localKey struct {
	node int
	claimKey
}

func (a *accounting) init(videos int) {
	for ev := range numDedup {
		a.ref[ev] = make([]uint64, videos)
		a.gross[ev] = make([]uint64, videos)
	}
	a.claims = map[claimKey]int{}
	a.local = map[localKey]*submission{}
	a.likers = make([][]int, videos)
	a.likeMade = make([]uint64, videos)
	a.likeComps = make([]uint64, videos)
	a.likeReapplied = make([]uint64, videos)
	a.minIngest, a.maxIngest = math.MaxInt64, math.MinInt64
	a.sketch = make([]*[crdt.HLLRegisters]uint8, videos)
	a.viewers = make([]int, videos)
	a.viewed = map[[2]int]bool{}
	a.hllEst = make([]uint64, videos)
	a.hllOld = make([]bool, videos)
	a.convergedSince = make([]time.Duration, videos)
	for i := range a.convergedSince {
		a.convergedSince[i] = -1
	}
}

// counted records a durable counted event and checks node-local dedup.
func (a *accounting) counted(s *Sim, sub *submission) {
	a.minIngest, a.maxIngest = min(a.minIngest, sub.ingestMs), max(a.maxIngest, sub.ingestMs)
	ev := sub.v.kind.event()
	if ev == evLike {
		a.likeTransitions++
		a.likeMade[sub.v.video]++
		return
	}
	vi := sub.v.video
	a.gross[ev][vi]++
	ck := claimKey{event: ev, video: vi, user: sub.v.u.idx, window: sub.window}
	if a.claims[ck]++; a.claims[ck] == 1 {
		a.ref[ev][vi]++
	}
	if ev == evView {
		a.insertViewer(vi, sub.v.u)
	}
	lk := localKey{node: sub.node.idx, claimKey: ck}
	if first := a.local[lk]; first != nil {
		s.failf("%s counted %s %s by %s twice in dedup window %d (at %s and %s)",
			sub.node.name, eventNames[ev], s.videos[ck.video], sub.v.u.id, ck.window, fmtSec(first.at), fmtSec(sub.at))
		return
	}
	a.local[lk] = sub
}

// insertViewer adds u to the reference sketch of video vi.
func (a *accounting) insertViewer(vi int, u *user) {
	if a.viewed[[2]int{vi, u.idx}] {
		return
	}
	a.viewed[[2]int{vi, u.idx}] = true
	a.viewers[vi]++
	if a.sketch[vi] == nil {
		a.sketch[vi] = new([crdt.HLLRegisters]uint8)
	}
	chunk, off, rho := crdt.HLLPosition(u.id)
	if i := chunk*crdt.HLLChunkRegisters + off; rho > a.sketch[vi][i] {
		a.sketch[vi][i] = rho
		a.hllOld[vi] = true
	}
}

// uniques is the estimate of video vi's reference sketch.
func (a *accounting) uniques(vi int) uint64 {
	if a.sketch[vi] == nil {
		return 0
	}
	if a.hllOld[vi] {
		a.hllEst[vi], a.hllOld[vi] = crdt.EstimateHLL(a.sketch[vi]), false
	}
	return a.hllEst[vi]
}

// likeOp records that v (a like or unlike) was sent.
func (a *accounting) likeOp(v *view) {
	l := a.likers[v.video]
	if i, found := slices.BinarySearch(l, v.u.idx); !found {
		a.likers[v.video] = slices.Insert(l, i, v.u.idx)
	}
}

// doubleCounted is the number of durable counted events of type ev beyond
// the first of each (video, user, window): what the claim rule had to
// compensate.
func (a *accounting) doubleCounted(ev int) int {
	n := 0
	for k, c := range a.claims {
		if k.event == ev {
			n += c - 1
		}
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
	s.samples++
	depth := sampleViews
	if s.samples%fullEvery == 0 {
		depth = sampleFull
	}
	for _, nd := range s.nodes {
		if nd.up {
			s.sampleNode(nd, depth)
		}
	}
	s.divergence()
	if s.plot != nil {
		s.plotSample()
	}
}

// How much sampleNode reads.
type sampleDepth uint8

const (
	sampleViews  sampleDepth = iota // view counts
	sampleCounts                    // and share counts, like counts and counters
	sampleFull                      // and every user's Liked (sampleLiked)
)

// sampleNode reads nd's durable view counts and checks that the counts
// ever made (Value + Compensated) never went backwards (across restarts
// too) and that none exceeds the views durably counted. Deeper, it does the
// same for shares, reads the like counts and counters, and (sampleFull)
// asks nd whether each user who ever liked a video likes it.
func (s *Sim) sampleNode(nd *node, depth sampleDepth) {
	events := 1 // views
	if depth >= sampleCounts {
		events = numDedup
	}
	for ev := range events {
		for vi, video := range s.videos {
			c, err := nd.n.Count(video, eventNames[ev])
			if err != nil {
				s.failf("%s: read %s of %s: %v", nd.name, eventNames[ev], video, err)
				return
			}
			gross := c.Value + c.Compensated
			if gross < nd.lastGross[ev][vi] {
				s.failf("%s: %s counts of %s ever made went backwards: %d, then %d (%d compensated)", nd.name, eventNames[ev], video, nd.lastGross[ev][vi], gross, c.Compensated)
				return
			}
			if gross > s.acct.gross[ev][vi] {
				s.failf("%s: %s has %d %s counts made, above the %d durably counted", nd.name, video, gross, eventNames[ev], s.acct.gross[ev][vi])
				return
			}
			nd.last[ev][vi], nd.lastGross[ev][vi] = c.Value, gross
		}
	}
	if depth < sampleCounts {
		return
	}
	for vi, video := range s.videos {
		n, err := nd.n.Likes(video)
		if err != nil {
			s.failf("%s: read likes of %s: %v", nd.name, video, err)
			return
		}
		net, err := nd.n.NetCount(video, region.EventLike)
		if err != nil {
			s.failf("%s: read like counter of %s: %v", nd.name, video, err)
			return
		}
		c, err := nd.n.Count(video, region.EventLike)
		if err != nil {
			s.failf("%s: read like counter of %s: %v", nd.name, video, err)
			return
		}
		nd.likes[vi], nd.likeNet[vi], nd.likeN[vi] = n, net, c.Compensated
		if depth == sampleFull {
			s.sampleLiked(nd, vi)
		}
	}
}

// sampleLiked asks nd, for every user who ever liked video vi, whether the
// user likes it, and checks that nd's like count is the number of them.
func (s *Sim) sampleLiked(nd *node, vi int) {
	video := s.videos[vi]
	likers := s.acct.likers[vi]
	liked := nd.liked[vi][:0]
	var yes uint64
	for _, ui := range likers {
		b := nd.n.Liked(video, s.users[ui].id)
		liked = append(liked, b)
		if b {
			yes++
		}
	}
	nd.liked[vi] = liked
	if n := nd.likes[vi]; n != yes {
		s.failf("%s: Likes(%s) = %d, but Liked is true for %d of the %d users who ever liked it", nd.name, video, n, yes, len(likers))
	}
}

// fullEvery is how often, in samples, the safety phase reads shares and
// likes too (sampleFull): views, the bulk of the workload, are read at
// every sample.
const fullEvery = 5

// divergence updates the largest spread of one video's view count across
// the live replicas (max - min), from their last samples.
func (s *Sim) divergence() {
	for vi := range s.videos {
		lo, hi, any := uint64(0), uint64(0), false
		for _, nd := range s.nodes {
			if !nd.up {
				continue
			}
			v := nd.last[evView][vi]
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

// videoConverged reports whether every replica is up and holds video vi's
// reference view and share counts and the same likes: the same like count,
// the same answer for every user who ever liked it, the same like counter
// (ΣP and ΣN), a counter value (ΣP − ΣN, its compensations included) equal
// to the like count, and every like and unlike made durably in it (ΣP + ΣN
// at least the transitions counted; compensations add to it). Likes have no
// reference count (which of two concurrent transitions wins is the
// cluster's to decide), so agreement alone would take two regions that
// each hold their own like of the same user, before the two met, for
// converged; the counter's sum is what tells them apart. nodes must have
// been sampled just before.
func (s *Sim) videoConverged(vi int) bool {
	var first *node
	for _, nd := range s.nodes {
		if !nd.up {
			return false
		}
		for ev := range numDedup {
			if nd.last[ev][vi] != s.acct.ref[ev][vi] {
				return false
			}
		}
		if nd.likeNet[vi] != int64(nd.likes[vi]) || nd.likeGross(vi) < s.acct.likeMade[vi] {
			return false
		}
		if first == nil {
			first = nd
		} else if nd.likes[vi] != first.likes[vi] || nd.likeNet[vi] != first.likeNet[vi] || nd.likeN[vi] != first.likeN[vi] {
			return false
		}
	}
	// The per-user answers last, only when the rest agrees.
	for _, nd := range s.nodes {
		s.sampleLiked(nd, vi)
		if !slices.Equal(nd.liked[vi], first.liked[vi]) {
			return false
		}
	}
	return true
}

// likeGross is ΣP + ΣN of nd's like counter of video vi, as last sampled:
// every like and unlike made, and every one taken back.
func (nd *node) likeGross(vi int) uint64 {
	return uint64(nd.likeNet[vi]) + 2*nd.likeN[vi]
}

// convergedAll samples every node and reports whether every replica has
// converged on every video (videoConverged); it tracks per video since when.
func (s *Sim) convergedAll() bool {
	all := true
	for _, nd := range s.nodes {
		if !nd.up {
			all = false
			continue
		}
		s.sampleNode(nd, sampleCounts)
	}
	for vi := range s.videos {
		switch {
		case !s.videoConverged(vi):
			s.acct.convergedSince[vi] = -1
			all = false
		case s.acct.convergedSince[vi] < 0:
			s.acct.convergedSince[vi] = s.now
		}
	}
	return all && s.fail == nil
}

// settled is the whole convergence condition: every replica converged
// (convergedAll), no client request outstanding, and the state derived from
// the counters agrees too (derivedProblem). The derived checks cost more, so
// they run only once the rest holds, at most every sampleEvery while they
// fail; s.derived keeps their last complaint.
func (s *Sim) settled() bool {
	if !s.convergedAll() || !s.quiet() {
		return false
	}
	if s.now < s.derivedNext {
		return false
	}
	s.derived = s.derivedProblem()
	if s.derived != "" {
		s.derivedNext = s.now + sampleEvery
		return false
	}
	return true
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

// bucketRange is a range of time covering every bucket any node changed:
// the minutes of the earliest and latest ingest, a minute more each side.
func (s *Sim) bucketRange() (from, to time.Time, ok bool) {
	a := &s.acct
	if a.minIngest > a.maxIngest {
		return time.Time{}, time.Time{}, false
	}
	m := crdt.Minute
	return time.UnixMilli(m.Start(m.Index(a.minIngest) - 1)).UTC(), time.UnixMilli(m.Start(m.Index(a.maxIngest) + 2)).UTC(), true
}

// topWindow and topWindowMinutes are the trending window checked.
const (
	topWindow        = "1h"
	topWindowMinutes = 60
)

// derivedProblem checks, on every (live) replica, the state derived from the
// counters, and describes the first disagreement ("" if none):
//
//   - Σ buckets = total: for every video and event type, the Total of the
//     minute, hour and day series over every bucket any node changed equals
//     the counter's ΣP − ΣN (NetCount);
//   - unique viewers: UniqueViewers equals the estimate of the reference
//     sketch of every (video, user) counted anywhere;
//   - trending: Top(view, 1h) lists the videos by reference view count,
//     highest first, ties by video ID, on every node whose 1 h window covers
//     every minute counted in (all of them unless clocks straddle the
//     window's edge), and only with a top list computed ≥ 1 s of the node's
//     clock after its previous one (the node caches it for 1 s).
func (s *Sim) derivedProblem() string {
	from, to, spanned := s.bucketRange()
	for _, nd := range s.nodes {
		for _, video := range s.videos {
			for ev := range numEvents {
				net, err := nd.n.NetCount(video, eventNames[ev])
				if err != nil {
					return fmt.Sprintf("%s: NetCount(%s, %s): %v", nd.name, video, eventNames[ev], err)
				}
				if !spanned {
					if net != 0 {
						return fmt.Sprintf("%s: %s of %s = %d, but nothing was counted", nd.name, eventNames[ev], video, net)
					}
					continue
				}
				for _, res := range crdt.Resolutions {
					sr, err := nd.n.Series(video, eventNames[ev], from, to, res)
					if err != nil {
						return fmt.Sprintf("%s: Series(%s, %s, %s): %v", nd.name, video, eventNames[ev], res, err)
					}
					if sr.Total != net {
						return fmt.Sprintf("%s: Σ %s buckets of %s %ss = %d, but its counter (ΣP−ΣN) = %d (%s)",
							nd.name, res, video, eventNames[ev], sr.Total, net, fmtPoints(sr))
					}
				}
			}
		}
	}
	for vi, video := range s.videos {
		want := s.acct.uniques(vi)
		for _, nd := range s.nodes {
			got, err := nd.n.UniqueViewers(video)
			if err != nil {
				return fmt.Sprintf("%s: UniqueViewers(%s): %v", nd.name, video, err)
			}
			if got != want {
				return fmt.Sprintf("%s: UniqueViewers(%s) = %d, the reference sketch of its %d viewers estimates %d", nd.name, video, got, s.acct.viewers[vi], want)
			}
		}
	}
	want := s.refTop()
	s.topChecked, s.topSkipped = 0, 0
	for _, nd := range s.nodes {
		if !s.topCovers(nd) {
			s.topSkipped++
			continue
		}
		if nd.topHi != 0 && s.nodeTime(nd).UnixMilli() < nd.topHi+1000 {
			return fmt.Sprintf("%s: top list cached, asked again %s of its clock later", nd.name, fmtSec(time.Duration(nd.topHi+1000-s.nodeTime(nd).UnixMilli())*time.Millisecond))
		}
		got, err := s.top(nd, region.EventView)
		if err != nil {
			return fmt.Sprintf("%s: Top(view, %s): %v", nd.name, topWindow, err)
		}
		if !slices.Equal(got, want) {
			return fmt.Sprintf("%s: Top(view, %s) = %s, reference %s", nd.name, topWindow, fmtTop(got), fmtTop(want))
		}
		s.topChecked++
	}
	return ""
}

// videoCount is one entry of a top list.
type videoCount struct {
	video string
	count uint64
}

// top asks nd for its top list of event over the checked window (every video).
func (s *Sim) top(nd *node, event string) ([]videoCount, error) {
	res, err := nd.n.Top(event, topWindow, min(len(s.videos), region.MaxTopK))
	nd.topHi = nd.hiClock
	if err != nil {
		return nil, err
	}
	out := make([]videoCount, len(res))
	for i, r := range res {
		out[i] = videoCount{r.Video, r.Count}
	}
	return out, nil
}

// refTop is the top list the reference view counts make: every video with
// a view, highest count first, ties by video ID ascending.
func (s *Sim) refTop() []videoCount {
	var out []videoCount
	for vi, video := range s.videos {
		if n := s.acct.ref[evView][vi]; n > 0 {
			out = append(out, videoCount{video, n})
		}
	}
	slices.SortFunc(out, func(a, b videoCount) int {
		return cmp.Or(cmp.Compare(b.count, a.count), cmp.Compare(a.video, b.video))
	})
	return out[:min(len(out), len(s.videos), region.MaxTopK)]
}

// topCovers reports whether nd's trending window covers every minute any
// node counted a view in: the window is the last 60 minutes of the node's
// trending clock, which lies between its clock now and the latest reading
// it ever took.
func (s *Sim) topCovers(nd *node) bool {
	a := &s.acct
	if a.minIngest > a.maxIngest {
		return true
	}
	m := crdt.Minute
	return m.Index(nd.hiClock)-topWindowMinutes+1 <= m.Index(a.minIngest) && m.Index(a.maxIngest) <= m.Index(s.nodeTime(nd).UnixMilli())
}

func fmtTop(l []videoCount) string {
	parts := make([]string, len(l))
	for i, vc := range l {
		parts[i] = fmt.Sprintf("%s=%d", vc.video, vc.count)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func fmtPoints(sr region.Series) string {
	var parts []string
	for _, p := range sr.Points {
		if p.Count != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", p.Start.Format("15:04"), p.Count))
		}
	}
	if len(parts) == 0 {
		return "no bucket counted"
	}
	return "buckets " + strings.Join(parts, " ")
}

// divergenceDetail describes the videos whose replicas differ from the
// reference or from each other (at most three), or else what the derived
// checks last found, for a failure message.
func (s *Sim) divergenceDetail() string {
	var parts []string
	for vi, video := range s.videos {
		if s.videoConverged(vi) {
			continue
		}
		var b strings.Builder
		fmt.Fprintf(&b, "%s ref=%d shares=%d transitions=%d:", video, s.acct.ref[evView][vi], s.acct.ref[evShare][vi], s.acct.likeMade[vi])
		for _, nd := range s.nodes {
			if !nd.up {
				fmt.Fprintf(&b, " %s=down", nd.name)
				continue
			}
			fmt.Fprintf(&b, " %s=%d/%d/%d(counter %d, ΣP+ΣN %d)", nd.name, nd.last[evView][vi], nd.last[evShare][vi], nd.likes[vi], nd.likeNet[vi], nd.likeGross(vi))
		}
		parts = append(parts, b.String())
		if len(parts) == 3 {
			break
		}
	}
	if len(parts) > 0 {
		parts[0] = "views/shares/likes per node: " + parts[0]
	}
	if !s.quiet() {
		parts = append(parts, "client requests outstanding")
	}
	if len(parts) == 0 && s.derived != "" {
		parts = append(parts, s.derived)
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
				s.failf("acknowledged %s of %s by %s at %s was never durable", sub.v.kind, s.videos[sub.v.video], sub.v.u.id, sub.node.name)
				return
			}
		}
	}
	if s.phase == phaseDone {
		s.checkConverged()
	}
}

// checkConverged runs the checks of a converged cluster that are not
// conditions of convergence but its expected outcome.
func (s *Sim) checkConverged() {
	s.acct.likes = 0
	for _, n := range s.nodes[0].likes { // converged: every node agrees
		s.acct.likes += n
	}
	if msg := s.likeIntentProblem(); msg != "" {
		s.failf("%s", msg)
		return
	}
	if msg := s.auditCompensations(); msg != "" {
		s.failf("%s", msg)
	}
}

// likeIntentProblem checks the users whose likes of a video the cluster
// cannot have decided by a conflict: with sync durability, every like and
// unlike of the (video, user) was sent once, to one node, and acknowledged.
// No other node then made a transition of the pair, so every replica must
// end in the state of the last of them that node applied (in arrival order;
// a rate-limited one changes nothing), or not liked if none.
// A pair touched through a failover is left out: a retry in another region
// may make the same transition concurrently, and the claim rule, not the
// order the client sent them in, then decides.
func (s *Sim) likeIntentProblem() string {
	type pair struct{ video, user int }
	clean := map[pair]bool{}
	at := map[pair]*node{}
	for _, v := range s.views {
		if !v.kind.isLike() {
			continue
		}
		k := pair{v.video, v.u.idx}
		ok, seen := clean[k]
		if seen && !ok {
			continue
		}
		ok = v.acked && len(v.nodes) == 1 && (at[k] == nil || at[k] == v.nodes[0])
		clean[k] = ok
		at[k] = v.nodes[0]
	}
	want := map[pair]bool{}
	for _, sub := range s.subs {
		k := pair{sub.v.video, sub.v.u.idx}
		if !sub.v.kind.isLike() || !clean[k] {
			continue
		}
		if f := sub.res.Fate; f == store.FateCounted || f == store.FateDuplicate {
			want[k] = sub.v.kind == opLike
		}
	}
	last := map[pair]*view{} // the last like event sent, per pair
	for _, v := range s.views {
		if v.kind.isLike() {
			last[pair{v.video, v.u.idx}] = v
		}
	}
	s.stats.likeIntentsChecked, s.stats.likeLastAckOverridden = 0, 0
	for vi, video := range s.videos {
		for _, ui := range s.acct.likers[vi] {
			k := pair{vi, ui}
			v := last[k]
			applied := v.ackFate == store.FateCounted || v.ackFate == store.FateDuplicate
			if v.acked && applied && s.nodes[0].n.Liked(video, s.users[ui].id) != (v.kind == opLike) {
				s.stats.likeLastAckOverridden++
			}
			if !clean[k] || s.p.Durability != region.DurabilitySync {
				continue
			}
			s.stats.likeIntentsChecked++
			for _, nd := range s.nodes {
				if !nd.up {
					continue
				}
				if got := nd.n.Liked(video, s.users[ui].id); got != want[k] {
					return fmt.Sprintf("%s: Liked(%s, %s) = %v, but every like/unlike of it went to %s alone and was acknowledged, the last applied being %s",
						nd.name, video, s.users[ui].id, got, at[k].name, lastLikeOp(want[k]))
				}
			}
		}
	}
	return ""
}

func lastLikeOp(liked bool) string {
	if liked {
		return "a like"
	}
	return "an unlike (or none)"
}

// auditCompensations reads the compensations every live node logged in its
// raw event log, per event type, and checks those of views and shares
// against the double counts: every losing claim compensates exactly once.
func (s *Sim) auditCompensations() string {
	if err := s.countCompensations(); err != nil {
		return err.Error()
	}
	for ev := range numDedup {
		if got, want := s.acct.compensations[ev], s.acct.doubleCounted(ev); got != uint64(want) {
			return fmt.Sprintf("the raw event logs hold %d compensations of %ss, but %d were double counted", got, eventNames[ev], want)
		}
	}
	// Every like and unlike made (or made again) is one step of its
	// replica's slot, and every compensation one step back: the converged
	// counter holds exactly those, no more (a transition applied twice) and
	// no less.
	for vi, video := range s.videos {
		nd := s.nodes[0]
		if got, want := nd.likeGross(vi), s.acct.likeMade[vi]+s.acct.likeComps[vi]+s.acct.likeReapplied[vi]; got != want {
			return fmt.Sprintf("%s: like counter of %s holds ΣP+ΣN = %d steps, but %d likes and unlikes were made, %d made again and %d compensated (raw event logs)",
				nd.name, video, got, s.acct.likeMade[vi], s.acct.likeReapplied[vi], s.acct.likeComps[vi])
		}
	}
	return ""
}

// countCompensations sets acct.compensations from the raw event logs of
// every live node.
func (s *Sim) countCompensations() error {
	s.acct.compensations = [numEvents]uint64{}
	clear(s.acct.likeComps)
	clear(s.acct.likeReapplied)
	byName := map[string]int{}
	for vi, video := range s.videos {
		byName[video] = vi
	}
	for _, nd := range s.nodes {
		if !nd.up {
			continue
		}
		err := nd.n.AuditEvents(math.MinInt64, math.MaxInt64, "", func(ev store.Event) error {
			if ev.Fate == store.FateReapplied {
				if vi, ok := byName[ev.Video]; ok {
					s.acct.likeReapplied[vi]++
				}
				return nil
			}
			if ev.Fate != store.FateCompensated {
				return nil
			}
			for i, name := range eventNames {
				if ev.Event == name {
					s.acct.compensations[i]++
				}
			}
			if vi, ok := byName[ev.Video]; ok && ev.Event == region.EventLike {
				s.acct.likeComps[vi]++
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("%s: read the raw event log: %w", nd.name, err)
		}
	}
	return nil
}

// ackedLost counts counted events whose answer reached the client and whose
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
