package replication

import (
	"slices"
	"sort"
	"time"

	"github.com/tallyhq/tally/crdt"
)

// session is a digest repair we started with a peer.
type session struct {
	id      uint64
	head    uint64   // our log head when the digest was taken
	sums    []uint64 // the digest sent
	started time.Time
	sentAt  time.Time // of the digest, last time
	moved   time.Time // last progress: start, a reply page, an acknowledgement
	hold    bool      // deltas wait for this repair (see peer.holding)

	// The reply: page 0 gives the differing buckets (diff, never nil once
	// known); we send our side once every page of the reply has arrived, so
	// that our pages carry the merged states and the peer's merge of them
	// changes nothing further (no echo back).
	diff  []uint32
	got   map[uint32]bool // reply pages received
	final int64           // number of the reply's final page; -1 until seen
	out   *stream         // our pages
}

// stream pages our states of the keys in a list of buckets to one peer, with
// at most RepairWindow pages unacknowledged. Keys are paged in bucket order,
// sorted within a bucket; the position is the last key sent, so keys added
// to a bucket meanwhile never shift it (those that sort before it are changes
// after the digest and travel as deltas).
type stream struct {
	session uint64
	reply   bool
	head    uint64   // reply only: our log head when we compared digests
	hold    bool     // reply only: deltas wait for it (see peer.holding)
	diff    []uint32 // our buckets to page, ascending
	tell    []uint32 // reply only: the differing buckets in the initiator's space, for page 0
	bi      int      // index in diff of the bucket being paged
	last    crdt.Key // last key paged from diff[bi], if started
	started bool
	done    bool   // every key paged
	next    uint32 // number of the next new page
	pages   []outPage
}

// outPage is a sent page with entries, not yet acknowledged.
type outPage struct {
	n      uint32
	ids    []keyID
	hashes []uint64 // the keys' recorded state hashes at every send; 0 where they differed
	final  bool
	sentAt time.Time
}

func (s *stream) complete() bool { return s.done && len(s.pages) == 0 }

// startRepair sends a new digest to p, abandoning any repair of ours in
// progress with it.
func (e *Engine) startRepair(now time.Time, p *peer) {
	e.nextSession++
	s := &session{
		id:      e.nextSession,
		head:    e.head,
		sums:    slices.Clone(e.sums),
		started: now,
		sentAt:  now,
		moved:   now,
		hold:    e.head > 0 && (p.cursor == 0 || p.cursor < e.dropped),
		got:     map[uint32]bool{},
		final:   -1,
	}
	p.session = s
	p.repairDue = false
	p.nextRepair = now.Add(e.cfg.RepairInterval)
	e.send(p, Message{Kind: KindDigest, Session: s.id, Sums: s.sums}, 0)
}

// finishRepair: every page of ours is durable at p, so p holds everything we
// held when the digest was taken; the cursor moves up to that log head.
func (e *Engine) finishRepair(now time.Time, p *peer) {
	s := p.session
	p.session = nil
	p.repairs++
	p.nextRepair = now.Add(e.cfg.RepairInterval)
	p.cursor = max(p.cursor, s.head)
	e.absorb(p)
	e.shipDeltas(now, p, false)
}

// onDigest answers a peer's digest with our states of the differing buckets.
func (e *Engine) onDigest(now time.Time, p *peer, m *Message) {
	switch {
	case m.Session < p.lastServed:
		return // overtaken by a newer session
	case m.Session == p.lastServed && (p.resp != nil || p.respDone):
		// A duplicate, or a retry of a digest we are answering (our pages
		// are resent on their own timers) or have answered in full (the
		// initiator has page 0: it acknowledged pages).
		return
	}
	if s := p.session; s != nil {
		// Both sides opened a repair at once (both saw the other join, or
		// both retried through a partition). One session serves both
		// directions (see servedRepair), so the node with the smaller ID
		// ignores the other's digest while its own session runs, and the
		// larger one gives its own up, unless already under way, when the
		// other's digest reaches it.
		if e.cfg.Self < p.id {
			return
		}
		if s.diff == nil {
			p.session = nil
		}
	}
	// A new session, or a retry after a reply we do not resend by ourselves
	// (an empty page 0): answer afresh.
	if m.Session > p.lastServed {
		p.served++
	}
	p.lastServed = m.Session
	p.respDone = false
	tell, ours := diffBuckets(m.Sums, e.sums)
	s := &stream{
		session: m.Session,
		reply:   true,
		diff:    ours,
		tell:    tell,
		head:    e.head,
		hold:    e.head > 0 && (p.cursor == 0 || p.cursor < e.dropped),
	}
	p.resp = s
	e.fill(now, p, s)
	if s.complete() {
		p.resp = nil // not acknowledged: a retry of the digest is answered again
		e.servedRepair(now, p, s)
	}
}

// servedRepair: our reply to p's digest is durable at p. In the buckets that
// differed p now holds our states; in the others it held them already (equal
// sums). So p holds everything we held when we compared, and the cursor moves
// up to that log head, as when a repair of ours completes.
func (e *Engine) servedRepair(now time.Time, p *peer, s *stream) {
	p.repairs++
	p.cursor = max(p.cursor, s.head)
	e.absorb(p)
	if ss := p.session; ss != nil && p.cursor >= ss.head {
		p.session = nil // ours would bring nothing more (we still merge and ack its pages)
		p.nextRepair = now.Add(e.cfg.RepairInterval)
	}
	e.shipDeltas(now, p, false)
}

// onRepairData hands the entries to the node with an acknowledgement. For
// the reply to our digest it notes the page; once all have arrived it starts
// sending our side.
func (e *Engine) onRepairData(now time.Time, p *peer, m *Message) {
	var ack *Message
	if len(m.Entries) > 0 {
		ack = e.reply(p, Message{Kind: KindRepairAck, Session: m.Session, Page: m.Page, Reply: m.Reply})
	}
	e.apply(p, m.Entries, ack)
	s := p.session
	if !m.Reply || m.ToEpoch != e.cfg.Epoch || s == nil || s.id != m.Session || s.out != nil {
		return
	}
	s.moved = now
	s.got[m.Page] = true
	if m.Page == 0 {
		s.diff = m.Buckets
		if s.diff == nil {
			s.diff = []uint32{}
		}
	}
	if m.Final {
		s.final = int64(m.Page)
	}
	if s.diff == nil || s.final < 0 || int64(len(s.got)) < s.final+1 {
		return
	}
	for i := range s.final + 1 {
		if !s.got[uint32(i)] {
			return
		}
	}
	s.got = nil
	s.out = &stream{session: s.id, diff: s.diff}
	e.fill(now, p, s.out)
	if s.out.complete() {
		e.finishRepair(now, p)
	}
}

func (e *Engine) onRepairAck(now time.Time, p *peer, m *Message) {
	if m.ToEpoch != e.cfg.Epoch {
		return // session numbers of an earlier incarnation of ours
	}
	if m.Reply {
		if s := p.resp; s != nil && s.session == m.Session && e.acked(p, s, m.Page) {
			e.fill(now, p, s)
			if s.complete() {
				p.resp = nil
				p.respDone = true
				e.servedRepair(now, p, s)
			}
		}
		return
	}
	if ss := p.session; ss != nil && ss.id == m.Session && ss.out != nil && e.acked(p, ss.out, m.Page) {
		ss.moved = now
		e.fill(now, p, ss.out)
		if ss.out.complete() {
			e.finishRepair(now, p)
		}
	}
}

// acked drops page n from the unacknowledged pages and reports whether it
// was there. The peer now durably holds the page's states: where a key's
// recorded state is still the one sent, the peer holds our current state, and
// deltas to it leave the key out (see keyInfo.echo) until it changes again.
func (e *Engine) acked(p *peer, s *stream, n uint32) bool {
	for i, pg := range s.pages {
		if pg.n != n {
			continue
		}
		s.pages = slices.Delete(s.pages, i, i+1)
		for j, id := range pg.ids {
			if info := &e.keys[id]; pg.hashes[j] != 0 && info.hash == pg.hashes[j] {
				info.echo = p.num
			}
		}
		return true
	}
	return false
}

// fill sends new pages while the window has room. Page 0 of a reply is sent
// even without entries (it carries the bucket list); other pages always hold
// entries, and a stream with no keys at all sends nothing else.
func (e *Engine) fill(now time.Time, p *peer, s *stream) {
	for len(s.pages) < e.cfg.RepairWindow && !s.done {
		ids, size := e.nextPage(s)
		if len(ids) == 0 && !(s.reply && s.next == 0) {
			break
		}
		pg := outPage{n: s.next, ids: ids, final: s.done, sentAt: now}
		if len(ids) > 0 {
			pg.hashes = make([]uint64, len(ids))
			for i, id := range ids {
				pg.hashes[i] = e.keys[id].hash
			}
		}
		s.next++
		e.sendPage(p, s, &pg, size)
		if len(ids) > 0 {
			s.pages = append(s.pages, pg) // empty pages are not acknowledged
		}
	}
}

// resendPages resends the pages whose acknowledgement is overdue, with
// current states. It reports whether any timer fired.
func (e *Engine) resendPages(now time.Time, p *peer, s *stream) bool {
	fired := false
	delay := e.retryDelay(p)
	for i := range s.pages {
		pg := &s.pages[i]
		if now.Sub(pg.sentAt) < delay {
			continue
		}
		size := 0
		for j, id := range pg.ids {
			info := &e.keys[id]
			size += entrySize(info.key, int(info.size))
			if info.hash != pg.hashes[j] {
				pg.hashes[j] = 0 // the acknowledgement may be of either send
			}
		}
		e.sendPage(p, s, pg, size)
		pg.sentAt = now
		fired = true
	}
	return fired
}

func (e *Engine) sendPage(p *peer, s *stream, pg *outPage, size int) {
	m := Message{Kind: KindRepairData, Session: s.session, Page: pg.n, Final: pg.final, Reply: s.reply}
	if s.reply && pg.n == 0 {
		m.Buckets = s.tell
	}
	if len(pg.ids) > 0 {
		m.Entries = make([]Entry, len(pg.ids))
		for i, id := range pg.ids {
			k := e.keys[id].key
			m.Entries[i] = Entry{Key: k, State: e.src.State(k)}
		}
	}
	e.send(p, m, size)
}

// nextPage takes the keys of the next page, within MaxBatchKeys and
// MaxBatchBytes (less the bucket list on page 0 of a reply), and sets s.done
// when no key is left after them.
func (e *Engine) nextPage(s *stream) (ids []keyID, size int) {
	budget := e.cfg.MaxBatchBytes
	if s.reply && s.next == 0 {
		budget -= bucketsSize(s.tell)
	}
	for s.bi < len(s.diff) {
		bids := e.sortedIDs(&e.buckets[s.diff[s.bi]])
		j := 0
		if s.started {
			last := s.last
			j = sort.Search(len(bids), func(i int) bool { return cmpKey(e.keys[bids[i]].key, last) > 0 })
		}
		for ; j < len(bids); j++ {
			info := &e.keys[bids[j]]
			sz := entrySize(info.key, int(info.size))
			if len(ids) == e.cfg.MaxBatchKeys || len(ids) > 0 && size+sz > budget {
				return ids, size // bids[j] is left: not done
			}
			ids = append(ids, bids[j])
			size += sz
			s.last, s.started = info.key, true
		}
		s.bi++
		s.started = false
	}
	s.done = true
	return ids, size
}
