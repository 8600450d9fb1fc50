package sim

import (
	"bufio"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/region"
)

// RunScript runs a scenario script and returns it with every command's
// actual output in place of the recorded one (so a test compares it with the
// file, and -update writes it back). The error reports the first failed
// expectation or broken invariant; the output is complete even then.
//
// A script is blocks of: comment lines (#), one command, a "----" line, the
// command's output, and a blank line (the style of etcd's datadriven tests).
// Faults happen only when a command makes them. Commands:
//
//	regions us eu ap [nodes=1] [durability=sync] [seed=1] [videos=3] [client-timeout=1s]
//	        [repair-interval=30s] [log-capacity=N] [batch-keys=N]
//	views TARGET N [video=v1|*] [users=PREFIX] N views from N users homed on TARGET's nodes; wait for answers
//	view USER VIDEO [via=NODE] [at=NODE]       one view, failover included; wait; print its trail
//	                                           (via: the home of a new user; at: the node of the first attempt)
//	share|like|unlike USER VIDEO [via=NODE] [at=NODE]  the same for a share, a like or an unlike
//	submit NODE N [video=v1]                   N views handed to NODE now, no time passes (a crash loses them)
//	tick DURATION                              let simulated time pass
//	partition A B | partition A -> B | isolate REGION | clog A B | heal
//	crash NODE | restart NODE | stall NODE DURATION | jump NODE ±DURATION | flap NODE DURATION
//	counts [VIDEO]                             every node's durable count and the reference
//	likes VIDEO                                every node's like count, like counter and users liking
//	buckets VIDEO [EVENT]                      every node's Σ minute, hour and day buckets and counter
//	top [EVENT]                                every node's Top(EVENT, 1h) (and, for views, the reference)
//	uniques VIDEO                              every node's UniqueViewers and the reference sketch's estimate
//	stats                                      reference, doubleCounted, ackedLost, ...
//	status                                     every node's replication engine state per peer
//	expect converged within DURATION           run until every replica equals the reference (and
//	                                           agrees on likes, buckets, unique viewers, top)
//	expect count VIDEO = N [event=share]       every live replica shows N
//	expect likes VIDEO = N                     every live replica has N likes and a like counter of N
//	expect liked USER VIDEO = true|false       every live replica answers Liked so
//	expect compensations EVENT = N             the raw event logs hold N compensations of EVENT
//	expect top EVENT = [v1=N ...]              every live replica's Top(EVENT, 1h) is this list
//	expect doubleCounted = N | expect ackedLost = N | expect ref VIDEO = N
//
// TARGET, A and B name a region ("us") or a node ("us-1").
func RunScript(text string) (string, error) {
	blocks, err := parseScript(text)
	if err != nil {
		return "", err
	}
	sc := &script{}
	defer sc.close()
	var out strings.Builder
	var firstErr error
	for i, b := range blocks {
		for _, c := range b.comments {
			out.WriteString(c + "\n")
		}
		if b.cmd == "" {
			if i < len(blocks)-1 {
				out.WriteString("\n")
			}
			continue
		}
		got, err := sc.exec(b.cmd)
		if err == nil && sc.s != nil && sc.s.fail != nil {
			err = fmt.Errorf("invariant broken: %s at t=%s", sc.s.fail.reason, fmtSec(sc.s.fail.at))
			sc.s.fail = nil // report once; later commands still run
		}
		if err != nil {
			got = strings.TrimRight(got+"\nERROR: "+err.Error(), "\n")
			if firstErr == nil {
				firstErr = fmt.Errorf("line %d: %s: %w", b.line, b.cmd, err)
			}
		}
		fmt.Fprintf(&out, "%s\n----\n", b.cmd)
		if got = strings.Trim(got, "\n"); got != "" {
			out.WriteString(got + "\n")
		}
		if i < len(blocks)-1 {
			out.WriteString("\n")
		}
	}
	return out.String(), firstErr
}

type scriptBlock struct {
	comments []string
	cmd      string
	line     int
}

func parseScript(text string) ([]scriptBlock, error) {
	var blocks []scriptBlock
	var cur scriptBlock
	sc := bufio.NewScanner(strings.NewReader(text))
	line := 0
	inOutput := false
	for sc.Scan() {
		line++
		l := sc.Text()
		switch {
		case inOutput:
			if strings.TrimSpace(l) == "" {
				blocks = append(blocks, cur)
				cur, inOutput = scriptBlock{}, false
			}
		case strings.HasPrefix(l, "#"):
			cur.comments = append(cur.comments, l)
		case strings.TrimSpace(l) == "":
			if len(cur.comments) > 0 {
				blocks = append(blocks, cur) // a comment paragraph of its own
				cur = scriptBlock{}
			}
		case l == "----":
			if cur.cmd == "" {
				return nil, fmt.Errorf("line %d: ---- without a command", line)
			}
			inOutput = true
		default:
			if cur.cmd != "" {
				return nil, fmt.Errorf("line %d: command %q has no ---- line", line, cur.cmd)
			}
			cur.cmd, cur.line = strings.TrimSpace(l), line
		}
	}
	if cur.cmd != "" || len(cur.comments) > 0 {
		if cur.cmd != "" && !inOutput {
			return nil, fmt.Errorf("line %d: command %q has no ---- line", cur.line, cur.cmd)
		}
		blocks = append(blocks, cur)
	}
	return blocks, sc.Err()
}

type script struct {
	s     *Sim
	users int // generated user names so far
}

func (sc *script) close() {
	if sc.s != nil {
		sc.s.close()
	}
}

func (sc *script) exec(cmd string) (string, error) {
	f := strings.Fields(cmd)
	if f[0] == "regions" {
		return sc.regions(f[1:])
	}
	if sc.s == nil {
		return "", errors.New("the first command must be regions")
	}
	s := sc.s
	var out strings.Builder
	switch f[0] {
	case "views":
		if len(f) < 3 {
			return "", errors.New("usage: views TARGET N [video=V] [users=PREFIX]")
		}
		nodes, err := sc.targets(f[1])
		if err != nil {
			return "", err
		}
		n, err := strconv.Atoi(f[2])
		if err != nil {
			return "", err
		}
		opts := options(f[3:])
		video, err := sc.video(opts["video"])
		if opts["video"] == "*" {
			err = nil // views spread over every video in turn
		}
		if err != nil {
			return "", err
		}
		var vs []*view
		for i := range n {
			u := sc.user(opts["users"], i, nodes[i%len(nodes)])
			if opts["video"] == "*" {
				video = i % len(s.videos)
			}
			vs = append(vs, s.startView(u, video))
		}
		sc.await(vs)
		fmt.Fprint(&out, summarise(vs))
	case "view", "share", "like", "unlike":
		if len(f) < 3 {
			return "", fmt.Errorf("usage: %s USER VIDEO [via=NODE] [at=NODE]", f[0])
		}
		kind := opKind(slices.Index(opNames[:], f[0]))
		opts := options(f[3:])
		home := s.nodes[0]
		if via := opts["via"]; via != "" {
			if home = s.byName[via]; home == nil {
				return "", fmt.Errorf("no node %q", via)
			}
		}
		var first *node
		if name := opts["at"]; name != "" {
			if first = s.byName[name]; first == nil {
				return "", fmt.Errorf("no node %q", name)
			}
		}
		video, err := sc.video(f[2])
		if err != nil {
			return "", err
		}
		u := sc.namedUser(f[1], home)
		v := s.startOp(u, video, kind, first)
		sc.await([]*view{v})
		status := "gave up"
		if v.acked {
			status = "acked"
		}
		fmt.Fprintf(&out, "%s: %s", status, strings.Join(v.trail, ", "))
	case "submit":
		if len(f) < 3 {
			return "", errors.New("usage: submit NODE N [video=V]")
		}
		nd := s.byName[f[1]]
		if nd == nil {
			return "", fmt.Errorf("no node %q", f[1])
		}
		n, err := strconv.Atoi(f[2])
		if err != nil {
			return "", err
		}
		video, err := sc.video(options(f[3:])["video"])
		if err != nil {
			return "", err
		}
		counted := 0
		for i := range n {
			u := sc.user("", i, nd)
			v := &view{id: len(s.views), u: u, video: video, attempt: 1, nodes: []*node{nd}}
			s.views = append(s.views, v)
			s.stats.views++
			s.stats.ops[opView]++
			s.stats.attempts++
			s.arrive(v, 1, nd, time.Millisecond)
			s.after(s.p.ClientTimeout, func() { s.clientGaveUpOn(v, 1, nd, "timeout") })
			if last := s.subs[len(s.subs)-1]; last.v == v && last.res.Counted {
				counted++
			}
		}
		fmt.Fprintf(&out, "submitted %d to %s: counted %d, none durable yet", n, nd.name, counted)
	case "tick":
		d, err := arg(f, 1, time.ParseDuration)
		if err != nil {
			return "", err
		}
		s.runUntil(s.now + d)
	case "partition", "clog":
		if len(f) < 3 {
			return "", fmt.Errorf("usage: %s A B | partition A -> B", f[0])
		}
		oneWay := len(f) == 4 && f[2] == "->"
		bName := f[2]
		if oneWay {
			bName = f[3]
		}
		a, err := sc.targets(f[1])
		if err != nil {
			return "", err
		}
		b, err := sc.targets(bName)
		if err != nil {
			return "", err
		}
		var links [][2]int
		for _, x := range a {
			for _, y := range b {
				links = append(links, [2]int{x.idx, y.idx})
				if !oneWay {
					links = append(links, [2]int{y.idx, x.idx})
				}
			}
		}
		s.net.setLinks(links, f[0] == "clog", +1)
	case "isolate":
		r, err := sc.region(argStr(f, 1))
		if err != nil {
			return "", err
		}
		s.net.setLinks(s.regionLinks(func(a, b int) bool { return (a == r) != (b == r) }), false, +1)
		s.isolated[r]++
		s.membershipChanged()
	case "heal":
		s.net.healAll()
		for i := range s.isolated {
			s.isolated[i] = 0
		}
		s.membershipChanged()
	case "crash", "restart":
		nd := s.byName[argStr(f, 1)]
		if nd == nil {
			return "", fmt.Errorf("no node %q", argStr(f, 1))
		}
		if f[0] == "crash" {
			lost := len(nd.pending)
			s.crash(nd, "script")
			fmt.Fprintf(&out, "%s down, %d unsynced views lost", nd.name, lost)
		} else {
			old := nd.replica
			s.restart(nd)
			same := "same replica ID"
			if nd.replica != old {
				same = "new replica ID"
			}
			fmt.Fprintf(&out, "%s up, %s", nd.name, same)
		}
	case "flap":
		// Membership wrongly declares NODE failed for DURATION: every other
		// node drops it now and re-admits it after a detection delay.
		nd := s.byName[argStr(f, 1)]
		if nd == nil {
			return "", fmt.Errorf("no node %q", argStr(f, 1))
		}
		d, err := arg(f, 2, time.ParseDuration)
		if err != nil {
			return "", err
		}
		s.flapped[nd.idx]++
		s.refreshMembership()
		s.after(d, func() {
			s.flapped[nd.idx]--
			s.membershipChanged()
		})
	case "stall", "jump":
		nd := s.byName[argStr(f, 1)]
		if nd == nil {
			return "", fmt.Errorf("no node %q", argStr(f, 1))
		}
		d, err := arg(f, 2, time.ParseDuration)
		if err != nil {
			return "", err
		}
		if f[0] == "stall" {
			nd.stallUntil = max(nd.stallUntil, s.now+d)
		} else {
			nd.skew += d
		}
	case "counts":
		vids := []int{}
		if len(f) > 1 {
			v, err := sc.video(f[1])
			if err != nil {
				return "", err
			}
			vids = append(vids, v)
		} else {
			for vi := range s.videos {
				if s.acct.ref[evView][vi] > 0 {
					vids = append(vids, vi)
				}
			}
		}
		for _, nd := range s.nodes {
			if nd.up {
				s.sampleNode(nd, sampleCounts)
			}
		}
		for _, vi := range vids {
			fmt.Fprintf(&out, "%s ref=%d:", s.videos[vi], s.acct.ref[evView][vi])
			for _, nd := range s.nodes {
				if nd.up {
					fmt.Fprintf(&out, " %s=%d", nd.name, nd.last[evView][vi])
				} else {
					fmt.Fprintf(&out, " %s=down", nd.name)
				}
			}
			out.WriteString("\n")
		}
	case "likes":
		vi, err := sc.video(argStr(f, 1))
		if err != nil {
			return "", err
		}
		for _, nd := range s.nodes {
			if !nd.up {
				fmt.Fprintf(&out, "%s down\n", nd.name)
				continue
			}
			s.sampleNode(nd, sampleFull)
			var users []string
			for i, ui := range s.acct.likers[vi] {
				if nd.liked[vi][i] {
					users = append(users, s.users[ui].id)
				}
			}
			fmt.Fprintf(&out, "%s likes=%d counter=%d liked by [%s]\n", nd.name, nd.likes[vi], nd.likeNet[vi], strings.Join(users, " "))
		}
	case "buckets":
		vi, err := sc.video(argStr(f, 1))
		if err != nil {
			return "", err
		}
		event := region.EventView
		if len(f) > 2 {
			event = f[2]
		}
		from, to, ok := s.bucketRange()
		if !ok {
			return "nothing counted", nil
		}
		for _, nd := range s.nodes {
			if !nd.up {
				fmt.Fprintf(&out, "%s down\n", nd.name)
				continue
			}
			net, err := nd.n.NetCount(s.videos[vi], event)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(&out, "%s counter=%d", nd.name, net)
			for _, res := range crdt.Resolutions {
				sr, err := nd.n.Series(s.videos[vi], event, from, to, res)
				if err != nil {
					return "", err
				}
				fmt.Fprintf(&out, " Σ%s=%d", res, sr.Total)
			}
			out.WriteString("\n")
		}
	case "uniques":
		vi, err := sc.video(argStr(f, 1))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&out, "%s ref=%d (%d viewers):", s.videos[vi], s.acct.uniques(vi), s.acct.viewers[vi])
		for _, nd := range s.nodes {
			if !nd.up {
				fmt.Fprintf(&out, " %s=down", nd.name)
				continue
			}
			n, err := nd.n.UniqueViewers(s.videos[vi])
			if err != nil {
				return "", err
			}
			fmt.Fprintf(&out, " %s=%d", nd.name, n)
		}
	case "top":
		event := region.EventView
		if len(f) > 1 {
			event = f[1]
		} else {
			fmt.Fprintf(&out, "reference %s\n", fmtTop(s.refTop()))
		}
		for _, nd := range s.nodes {
			if !nd.up {
				fmt.Fprintf(&out, "%s down\n", nd.name)
				continue
			}
			got, err := s.top(nd, event)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(&out, "%s %s\n", nd.name, fmtTop(got))
		}
	case "status":
		out.WriteString(strings.TrimPrefix(s.replicationStatus(), "  "))
	case "stats":
		r := s.result()
		fmt.Fprintf(&out, "reference=%d doubleCounted=%d ackedLost=%d lostUnacked=%d acked=%d failovers=%d late-replies=%d",
			r.Reference, r.DoubleCounted, r.AckedLost, r.LostCounted-r.AckedLost, s.stats.acked, s.stats.failovers, s.stats.lateReplies)
	case "expect":
		return sc.expect(f[1:])
	default:
		return "", fmt.Errorf("unknown command %q", f[0])
	}
	return out.String(), nil
}

func (sc *script) regions(args []string) (string, error) {
	if sc.s != nil {
		return "", errors.New("regions given twice")
	}
	p := DefaultParams()
	p.NoFaults()
	p.Views, p.Users, p.Videos, p.Nodes = 0, 1, 3, 1
	var names []string
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			names = append(names, a)
			continue
		}
		var err error
		switch k {
		case "nodes":
			p.Nodes, err = strconv.Atoi(v)
		case "videos":
			p.Videos, err = strconv.Atoi(v)
		case "seed":
			p.Seed, err = strconv.ParseUint(v, 10, 64)
		case "durability":
			p.Durability = region.Durability(v)
		case "client-timeout":
			p.ClientTimeout, err = time.ParseDuration(v)
		case "repair-interval":
			p.RepairInterval, err = time.ParseDuration(v)
		case "log-capacity":
			p.LogCapacity, err = strconv.Atoi(v)
		case "batch-keys":
			p.BatchKeys, err = strconv.Atoi(v)
		default:
			err = fmt.Errorf("unknown option %q", k)
		}
		if err != nil {
			return "", err
		}
	}
	if len(names) == 0 || len(names) > len(regionNames) {
		return "", fmt.Errorf("want 1..%d region names", len(regionNames))
	}
	p.Regions = len(names)
	s, err := newSim(p, names, nil, false)
	if err != nil {
		return "", err
	}
	s.startSampling()
	sc.s = s
	var b strings.Builder
	for i, nd := range s.nodes {
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString(nd.name)
	}
	return b.String(), nil
}

// await runs until every view in vs is answered or given up (or 30 s).
func (sc *script) await(vs []*view) {
	s := sc.s
	deadline := s.now + 30*time.Second
	for s.now < deadline && s.fail == nil {
		done := true
		for _, v := range vs {
			done = done && v.done
		}
		if done {
			return
		}
		s.runUntil(s.now + time.Millisecond)
	}
}

func summarise(vs []*view) string {
	acked, gaveUp := 0, 0
	for _, v := range vs {
		if v.acked {
			acked++
		} else {
			gaveUp++
		}
	}
	return fmt.Sprintf("%d views: acked %d, gave up %d", len(vs), acked, gaveUp)
}

func (sc *script) expect(f []string) (string, error) {
	s := sc.s
	switch {
	case len(f) == 3 && f[0] == "converged" && f[1] == "within":
		d, err := time.ParseDuration(f[2])
		if err != nil {
			return "", err
		}
		deadline := s.now + d
		for s.fail == nil {
			if s.settled() {
				s.checkConverged()
				if s.fail != nil {
					return "", nil // reported by RunScript
				}
				// The time is left out: it moves with every tuning of the
				// protocol, and the bound is what the script asserts.
				return "converged", nil
			}
			if s.now >= deadline {
				return "", fmt.Errorf("not converged within %s: %s", f[2], s.divergenceDetail())
			}
			s.runUntil(s.now + livenessSample)
		}
		return "", nil
	case (len(f) == 4 || len(f) == 5) && f[0] == "count" && f[2] == "=":
		if _, err := sc.video(f[1]); err != nil {
			return "", err
		}
		want, err := strconv.ParseUint(f[3], 10, 64)
		if err != nil {
			return "", err
		}
		event := region.EventView
		if e := options(f[4:])["event"]; e != "" {
			event = e
		}
		for _, nd := range s.nodes {
			if !nd.up {
				continue
			}
			c, err := nd.n.Count(f[1], event)
			if err != nil {
				return "", err
			}
			if c.Value != want {
				return "", fmt.Errorf("%s has %d %ss of %s, want %d", nd.name, c.Value, event, f[1], want)
			}
		}
		return "ok", nil
	case len(f) == 4 && f[0] == "likes" && f[2] == "=":
		if _, err := sc.video(f[1]); err != nil {
			return "", err
		}
		want, err := strconv.ParseUint(f[3], 10, 64)
		if err != nil {
			return "", err
		}
		for _, nd := range s.nodes {
			if !nd.up {
				continue
			}
			n, err := nd.n.Likes(f[1])
			if err != nil {
				return "", err
			}
			net, err := nd.n.NetCount(f[1], region.EventLike)
			if err != nil {
				return "", err
			}
			if n != want || net != int64(want) {
				return "", fmt.Errorf("%s has %d likes of %s and a like counter of %d, want %d", nd.name, n, f[1], net, want)
			}
		}
		return "ok", nil
	case len(f) == 5 && f[0] == "liked" && f[3] == "=":
		if _, err := sc.video(f[2]); err != nil {
			return "", err
		}
		want, err := strconv.ParseBool(f[4])
		if err != nil {
			return "", err
		}
		for _, nd := range s.nodes {
			if nd.up && nd.n.Liked(f[2], f[1]) != want {
				return "", fmt.Errorf("%s: Liked(%s, %s) = %v, want %v", nd.name, f[2], f[1], !want, want)
			}
		}
		return "ok", nil
	case len(f) >= 4 && f[0] == "top" && f[2] == "=":
		want := strings.Join(f[3:], " ")
		for _, nd := range s.nodes {
			if !nd.up {
				continue
			}
			got, err := s.top(nd, f[1])
			if err != nil {
				return "", err
			}
			if fmtTop(got) != want {
				return "", fmt.Errorf("%s: Top(%s, %s) = %s, want %s", nd.name, f[1], topWindow, fmtTop(got), want)
			}
		}
		return "ok", nil
	case len(f) == 4 && f[0] == "compensations" && f[2] == "=":
		ev := slices.Index(eventNames[:], f[1])
		if ev < 0 {
			return "", fmt.Errorf("no event type %q (want view, share or like)", f[1])
		}
		if err := s.countCompensations(); err != nil {
			return "", err
		}
		if got := strconv.FormatUint(s.acct.compensations[ev], 10); got != f[3] {
			return "", fmt.Errorf("the raw event logs hold %s compensations of %ss, want %s", got, f[1], f[3])
		}
		return "ok", nil
	case len(f) == 4 && f[0] == "ref" && f[2] == "=":
		vi, err := sc.video(f[1])
		if err != nil {
			return "", err
		}
		if got := strconv.FormatUint(s.acct.ref[evView][vi], 10); got != f[3] {
			return "", fmt.Errorf("reference of %s is %s, want %s", f[1], got, f[3])
		}
		return "ok", nil
	case len(f) == 3 && (f[0] == "doubleCounted" || f[0] == "ackedLost") && f[1] == "=":
		got := s.acct.doubleCounted(evView)
		if f[0] == "ackedLost" {
			got = s.ackedLost()
		}
		if strconv.Itoa(got) != f[2] {
			return "", fmt.Errorf("%s is %d, want %s", f[0], got, f[2])
		}
		return "ok", nil
	}
	return "", fmt.Errorf("unknown expectation %q", strings.Join(f, " "))
}

// targets resolves a region or node name to nodes.
func (sc *script) targets(name string) ([]*node, error) {
	if nd := sc.s.byName[name]; nd != nil {
		return []*node{nd}, nil
	}
	r, err := sc.region(name)
	if err != nil {
		return nil, err
	}
	var out []*node
	for _, nd := range sc.s.nodes {
		if nd.region == r {
			out = append(out, nd)
		}
	}
	return out, nil
}

func (sc *script) region(name string) (int, error) {
	for i, r := range sc.s.regions {
		if r == name {
			return i, nil
		}
	}
	return 0, fmt.Errorf("no region or node %q", name)
}

func (sc *script) video(name string) (int, error) {
	if name == "" {
		return 0, nil
	}
	for i, v := range sc.s.videos {
		if v == name {
			return i, nil
		}
	}
	return 0, fmt.Errorf("no video %q (videos are v1..v%d)", name, len(sc.s.videos))
}

// user returns user prefix+(i+1), homed on home if new; with no prefix, a
// fresh user.
func (sc *script) user(prefix string, i int, home *node) *user {
	if prefix == "" {
		sc.users++
		return sc.s.newUser("c"+strconv.Itoa(sc.users), home)
	}
	return sc.namedUser(prefix+strconv.Itoa(i+1), home)
}

func (sc *script) namedUser(id string, home *node) *user {
	for _, u := range sc.s.users {
		if u.id == id {
			return u
		}
	}
	return sc.s.newUser(id, home)
}

func options(args []string) map[string]string {
	m := map[string]string{}
	for _, a := range args {
		if k, v, ok := strings.Cut(a, "="); ok {
			m[k] = v
		}
	}
	return m
}

func argStr(f []string, i int) string {
	if i < len(f) {
		return f[i]
	}
	return ""
}

func arg[T any](f []string, i int, parse func(string) (T, error)) (T, error) {
	var zero T
	if i >= len(f) {
		return zero, fmt.Errorf("%s: missing argument %d", f[0], i)
	}
	return parse(f[i])
}
