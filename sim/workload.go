package sim

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/tallyhq/tally/region"
	"github.com/tallyhq/tally/store"
)

const (
	maxAttempts = 3               // a client sends an event at most this often (home + 2 failovers)
	breakerOpen = 5 * time.Second // a node that failed a client is avoided this long
	recentViews = 5               // videos a user may repeat
)

// opKind is what a client event asks for.
type opKind uint8

const (
	opView opKind = iota
	opShare
	opLike
	opUnlike
	numOpKinds
)

var opNames = [numOpKinds]string{"view", "share", "like", "unlike"}

func (k opKind) String() string { return opNames[k] }

// Counters the simulator checks, by event type: views and shares are
// deduplicated per (video, user, window) with claims; likes follow the
// like/unlike transitions.
const (
	evView = iota
	evShare
	evLike
	numEvents
	numDedup = evLike // evView and evShare: the deduplicated event types
)

var eventNames = [numEvents]string{region.EventView, "share", region.EventLike}

// event is the counter k changes.
func (k opKind) event() int {
	switch k {
	case opShare:
		return evShare
	case opLike, opUnlike:
		return evLike
	}
	return evView
}

// isLike reports whether k is a like or an unlike.
func (k opKind) isLike() bool { return k == opLike || k == opUnlike }

// regionView is the event as a client sends it to a node.
func (k opKind) regionView(video, user string) region.View {
	v := region.View{Video: video, User: user}
	switch k {
	case opShare:
		v.Event = "share"
	case opLike, opUnlike:
		v.Event, v.Unlike = region.EventLike, k == opUnlike
	}
	return v
}

// user is a client: a home node, a failover order and a circuit breaker per node.
type user struct {
	idx    int
	id     string
	home   int     // region
	order  []*node // home node first, then one node of each other region, nearest first
	opened []time.Duration
	recent []int // video indexes, most recent last
	// likes is, per video the user ever liked or unliked, whether their last
	// like event was a like (what the client believes it asked for last);
	// likeVideos lists those videos in the order of the first like event.
	likes      map[int]bool
	likeVideos []int
}

// view is one event (a view, share, like or unlike) a client wants applied;
// it may be sent several times.
type view struct {
	id      int
	kind    opKind
	u       *user
	video   int
	first   *node // if set, the node the first attempt goes to (scripts)
	attempt int   // attempts sent so far; the current one is this number
	done    bool
	acked   bool
	trail   []string // per attempt, what happened (scripts print it)
	// nodes are the nodes its attempts were sent to, in order.
	nodes []*node
	// ackedAt is when the answer reached the client, ackFate what it said.
	ackedAt time.Duration
	ackFate store.Fate
}

// submission is one attempt of a view that a node accepted (SubmitViews).
type submission struct {
	v       *view
	attempt int
	node    *node
	p       *region.Pending
	res     region.Result
	window  uint64 // dedup window, by the node's clock at ingest
	at      time.Duration
	// ingestMs is the node's clock at ingest: the time buckets it counts in.
	ingestMs int64
	durable  bool // its batch was stepped before any crash
	lost     bool // its node crashed first
	replied  bool // the node sent the answer
	acked    bool // the answer reached the client in time
}

// newUser makes a client homed on nd.
func (s *Sim) newUser(id string, home *node) *user {
	u := &user{idx: len(s.users), id: id, home: home.region, opened: make([]time.Duration, len(s.nodes)), likes: map[int]bool{}}
	u.order = append(u.order, home)
	others := make([]int, 0, len(s.regions)-1)
	for r := range s.regions {
		if r != home.region {
			others = append(others, r)
		}
	}
	lat := s.net.regionLatency[home.region]
	sort.SliceStable(others, func(i, j int) bool { return lat[others[i]] < lat[others[j]] })
	for _, r := range others {
		u.order = append(u.order, s.nodes[r*s.p.Nodes+s.rClient.Intn(s.p.Nodes)])
	}
	s.users = append(s.users, u)
	return u
}

// startWorkload creates the users and schedules Views arrivals over Duration.
// Each arrival draws a user and a video as plain views always did (so that
// with --likes=0 --shares=0 the workload is the views-only one), then its
// kind from a sub-seed of its own: a share, a like toggle or a view.
func (s *Sim) startWorkload() {
	for i := range s.p.Users {
		home := s.nodes[s.rWork.Intn(len(s.nodes))]
		s.newUser("u"+strconv.Itoa(i+1), home)
	}
	if s.p.Views == 0 {
		return
	}
	weights := make([]float64, len(s.videos)) // Zipf-like popularity: cumulative 1/(i+1)
	total := 0.0
	for i := range weights {
		total += 1 / float64(i+1)
		weights[i] = total
	}
	// Arrival times: Views uniform draws over Duration, in order (a
	// Poisson process conditioned on its count), so that every run sends
	// exactly Views views.
	times := make([]time.Duration, s.p.Views)
	for i := range times {
		times[i] = time.Duration(s.rWork.Intn(int(s.p.Duration/time.Microsecond))) * time.Microsecond
	}
	slices.Sort(times)
	next := 0
	var arrive func()
	arrive = func() {
		if s.phase != phaseSafety {
			return
		}
		u := s.users[s.rWork.Intn(len(s.users))]
		var video int
		if len(u.recent) > 0 && s.rWork.Chance(s.p.Repeat) {
			video = u.recent[s.rWork.Intn(len(u.recent))]
		} else {
			x := s.rWork.Float64() * total
			video = min(sort.SearchFloat64s(weights, x), len(weights)-1)
		}
		kind := opView
		if s.p.Likes > 0 || s.p.Shares > 0 {
			switch x := s.rKind.Float64(); {
			case x < s.p.Likes:
				kind = opLike
				// Half of the toggles go back to a video the user liked or
				// unliked before: like, unlike, like again.
				if len(u.likeVideos) > 0 && s.rKind.Chance(0.5) {
					video = u.likeVideos[s.rKind.Intn(len(u.likeVideos))]
				}
				if u.likes[video] {
					kind = opUnlike
				}
			case x < s.p.Likes+s.p.Shares:
				kind = opShare
			}
		}
		s.startOp(u, video, kind, nil)
		if next++; next < len(times) {
			s.at(times[next], arrive)
		}
	}
	s.at(times[0], arrive)
}

// startView is a client deciding to send a view.
func (s *Sim) startView(u *user, video int) *view { return s.startOp(u, video, opView, nil) }

// startOp is a client deciding to send an event of kind; its first attempt
// goes to first if set, else to the client's usual node.
func (s *Sim) startOp(u *user, video int, kind opKind, first *node) *view {
	v := &view{id: len(s.views), kind: kind, u: u, video: video, first: first}
	s.views = append(s.views, v)
	if i := slices.Index(u.recent, video); i >= 0 {
		u.recent = slices.Delete(u.recent, i, i+1)
	}
	u.recent = append(u.recent, video)
	if len(u.recent) > recentViews {
		u.recent = u.recent[1:]
	}
	if kind.isLike() {
		if _, ok := u.likes[video]; !ok {
			u.likeVideos = append(u.likeVideos, video)
		}
		u.likes[video] = kind == opLike
		s.acct.likeOp(v)
	}
	s.stats.ops[kind]++
	if kind == opView {
		s.stats.views++
	}
	s.sendView(v)
	return v
}

// target is the first node in u's order whose breaker is closed, or the one
// whose breaker closes first.
func (s *Sim) target(u *user) *node {
	best := u.order[0]
	for _, nd := range u.order {
		if u.opened[nd.idx] <= s.now {
			return nd
		}
		if u.opened[nd.idx] < u.opened[best.idx] {
			best = nd
		}
	}
	return best
}

// clientLatency is a one-way trip between u and nd: u's home region's
// latency to nd's region plus the last mile.
func (s *Sim) clientLatency(u *user, nd *node) time.Duration {
	return s.net.regionLatency[u.home][nd.region] + s.rClient.Between(500*time.Microsecond, 3*time.Millisecond)
}

func (s *Sim) sendView(v *view) {
	nd := s.target(v.u)
	if v.attempt == 0 && v.first != nil {
		nd = v.first
	}
	v.nodes = append(v.nodes, nd)
	v.attempt++
	attempt := v.attempt
	s.stats.attempts++
	if attempt > 1 {
		s.stats.failovers++
	}
	lat := s.clientLatency(v.u, nd)
	s.stats.inTransit++
	s.after(lat, func() {
		s.stats.inTransit--
		s.arrive(v, attempt, nd, lat)
	})
	s.after(s.p.ClientTimeout, func() { s.clientGaveUpOn(v, attempt, nd, "timeout") })
}

// arrive is an event reaching a node.
func (s *Sim) arrive(v *view, attempt int, nd *node, lat time.Duration) {
	if !nd.up {
		s.after(lat, func() { s.clientGaveUpOn(v, attempt, nd, "refused") })
		return
	}
	ingestMs := s.nodeTime(nd).UnixMilli()
	p, err := nd.n.SubmitViews([]region.View{v.kind.regionView(s.videos[v.video], v.u.id)})
	if err != nil {
		s.failf("%s: submit %s: %v", nd.name, v.kind, err)
		return
	}
	res := p.Results()[0]
	if res.Err != nil {
		s.failf("%s: %s of %s by %s refused: %v", nd.name, v.kind, s.videos[v.video], v.u.id, res.Err)
		return
	}
	sub := &submission{
		v: v, attempt: attempt, node: nd, p: p, res: res, at: s.now, ingestMs: ingestMs,
		window: uint64(ingestMs / s.p.DedupWindow.Milliseconds()),
	}
	s.subs = append(s.subs, sub)
	switch res.Fate {
	case store.FateCounted:
		s.stats.counted++
		s.stats.kindCounted[v.kind]++
	case store.FateDuplicate:
		s.stats.duplicates++
		s.stats.kindDuplicate[v.kind]++
	case store.FateRateLimited:
		s.stats.rateLimited++
	}
	nd.pending = append(nd.pending, sub)
	s.needCommit(nd)
	done, err := p.Done()
	switch {
	case err != nil:
		s.failf("%s: batch failed: %v", nd.name, err)
	case s.p.Durability == region.DurabilityAsync && !done:
		s.failf("%s: async submission not acknowledged at once", nd.name)
	case s.p.Durability == region.DurabilitySync && done:
		s.failf("%s: sync submission reported durable before any group commit", nd.name)
	case done:
		s.reply(sub)
	}
}

// durable settles a submission whose batch was just stepped.
func (s *Sim) durable(sub *submission) {
	sub.durable = true
	if sub.res.Counted {
		s.acct.counted(s, sub)
	}
	if s.p.Durability == region.DurabilitySync {
		done, err := sub.p.Done()
		if err != nil || !done {
			s.failf("%s: view durable but Done() = %v, %v", sub.node.name, done, err)
			return
		}
		// A like's count can be 0 by now (a peer's unlike merged since).
		if res := sub.p.Results()[0]; sub.res.Counted && res.Count == 0 && !sub.v.kind.isLike() {
			s.failf("%s: counted %s of %s answered with count 0", sub.node.name, sub.v.kind, s.videos[sub.v.video])
			return
		}
		s.reply(sub)
	}
}

// lost settles a submission whose node crashed before its batch was stepped.
func (s *Sim) lost(sub *submission) {
	sub.lost = true
	if sub.res.Counted {
		s.acct.lostCounted++
	}
	if sub.replied && s.p.Durability == region.DurabilitySync {
		s.failf("%s: acknowledged %s of %s by %s lost in a crash", sub.node.name, sub.v.kind, s.videos[sub.v.video], sub.v.u.id)
	}
}

// reply sends the node's answer to the client.
func (s *Sim) reply(sub *submission) {
	sub.replied = true
	s.after(s.clientLatency(sub.v.u, sub.node), func() {
		v := sub.v
		if v.done || v.attempt != sub.attempt {
			s.stats.lateReplies++ // the client moved on (failover): the answer is ignored
			return
		}
		v.done, v.acked, sub.acked = true, true, true
		v.ackedAt, v.ackFate = s.now, sub.res.Fate
		v.trail = append(v.trail, sub.node.name+": "+sub.res.Fate.String())
		s.stats.acked++
		if sub.res.Counted {
			s.stats.ackedCounted++
		}
	})
}

// clientGaveUpOn: attempt of v at nd timed out or was refused; fail over.
func (s *Sim) clientGaveUpOn(v *view, attempt int, nd *node, why string) {
	if v.done || v.attempt != attempt {
		return
	}
	v.trail = append(v.trail, nd.name+": "+why)
	if why == "timeout" {
		s.stats.timeouts++
	} else {
		s.stats.refused++
	}
	v.u.opened[nd.idx] = s.now + breakerOpen
	if s.phase != phaseSafety || v.attempt >= maxAttempts {
		v.done = true
		s.stats.gaveUp++
		return
	}
	s.sendView(v)
}

func (v *view) String() string { return fmt.Sprintf("%s %d (%s)", v.kind, v.id, v.u.id) }
