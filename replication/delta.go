package replication

import (
	"time"
)

// peer is what the engine knows of one peer.
type peer struct {
	id         NodeID
	num        uint32    // for keyInfo.echo; renewed with each epoch
	epoch      uint64    // the peer's current incarnation; 0 before first contact
	epochHeard time.Time // when a message of that epoch last arrived

	// Delta push.
	cursor   uint64   // highest seq up to which the peer holds everything we had
	inflight []flight // unacknowledged deltas, by seq, not overlapping
	nextSync time.Time
	timeouts int // retransmission timeouts in a row (backoff); reset when it speaks

	// Delta receipt: when we last knew we held everything in its log.
	caughtUp  time.Time
	contacted bool

	// Repair.
	repairDue  bool
	nextRepair time.Time
	session    *session // a repair we started
	resp       *stream  // the reply to a repair it started
	lastServed uint64   // highest session of its current epoch we replied to
	respDone   bool     // the reply to lastServed was acknowledged in full
	repairs    uint64   // repairs completed either way (each moved the cursor)
	served     uint64   // digests of its we answered

	sentMsgs, sentBytes, recvMsgs uint64
	lastHeard                     time.Time
}

// flight is one unacknowledged Delta: the range (from, to] of our log.
type flight struct {
	from, to uint64
	sentAt   time.Time
	acked    bool // acknowledged, but an earlier range is not yet
}

// staleEpoch reports whether a message of epoch ep from p is to be refused
// as coming from a dead incarnation: ep is below p's current epoch, which
// has spoken within the last 4·RetryTimeout. Epochs that increase across
// restarts (start times) are thus never confused; with random epochs a
// restart whose epoch happens to be smaller is recognised once the old
// incarnation has been silent that long.
func (e *Engine) staleEpoch(now time.Time, p *peer, ep uint64) bool {
	return p.epoch != 0 && ep < p.epoch && now.Sub(p.epochHeard) < 4*e.cfg.RetryTimeout
}

// heard notes a message from p in epoch ep. A new epoch means p restarted and
// may have lost what it acknowledged: its cursor goes back to 0, unfinished
// exchanges are dropped, and a repair is due.
func (e *Engine) heard(now time.Time, p *peer, ep uint64) {
	p.recvMsgs++
	p.lastHeard = now
	p.timeouts = 0
	if ep == p.epoch {
		p.epochHeard = now
		return
	}
	p.epochHeard = now
	if p.epoch != 0 {
		e.nextPeer++
		p.num = e.nextPeer // what the old incarnation held, the new one may not
		p.cursor = 0
		p.inflight = nil
		p.session = nil
		p.resp = nil
		p.lastServed = 0
		p.respDone = false
		p.repairDue = true
	}
	p.epoch = ep
}

// holding reports whether deltas to p wait for a repair in progress: its
// cursor was reset or fell out of the log when the repair began, and
// replaying the whole log would cost more than the repair, which brings the
// cursor up to date anyway.
func (p *peer) holding() bool {
	return p.session != nil && p.session.hold || p.resp != nil && p.resp.hold
}

// shipDeltas sends new deltas to p while the window has room. If onlyFull, it
// sends only while a full batch may be waiting (used on acks, between the
// SyncInterval rounds). It returns the number sent.
func (e *Engine) shipDeltas(now time.Time, p *peer, onlyFull bool) int {
	if p.cursor < e.dropped || p.holding() {
		return 0
	}
	pos := p.cursor
	if n := len(p.inflight); n > 0 {
		pos = p.inflight[n-1].to
	}
	sent := 0
	for len(p.inflight) < e.cfg.MaxInflight && pos < e.head {
		if onlyFull && e.head-pos < uint64(e.cfg.MaxBatchKeys) {
			break
		}
		entries, to, size := e.collect(pos, e.head, true, p.num)
		if len(entries) == 0 {
			// Nothing in the range the peer lacks (stale entries, or states
			// that came from it): acknowledged without a word.
			p.inflight = append(p.inflight, flight{from: pos, to: to, acked: true})
			e.absorb(p)
		} else {
			e.sendDelta(p, pos, to, entries, size)
			p.inflight = append(p.inflight, flight{from: pos, to: to, sentAt: now})
			sent++
		}
		pos = to
	}
	return sent
}

func (e *Engine) sendDelta(p *peer, from, to uint64, entries []Entry, size int) {
	e.send(p, Message{Kind: KindDelta, FromSeq: from, ToSeq: to, Head: e.head, Acked: p.cursor, Entries: entries}, size)
}

// heartbeat tells p our log head and what it has acknowledged.
func (e *Engine) heartbeat(p *peer) {
	e.sendDelta(p, p.cursor, p.cursor, nil, 0)
}

// resendDeltas resends the deltas whose acknowledgement is overdue, with the
// current states of the keys still in their range. It reports whether any
// timer fired.
func (e *Engine) resendDeltas(now time.Time, p *peer) bool {
	if p.cursor < e.dropped {
		return false
	}
	fired := false
	delay := e.retryDelay(p)
	for i := range p.inflight {
		f := &p.inflight[i]
		if f.acked || now.Sub(f.sentAt) < delay {
			continue
		}
		// Below the cursor the peer has everything; nothing there was
		// dropped from the log above it (cursor ≥ dropped).
		f.from = max(f.from, p.cursor)
		entries, _, size := e.collect(f.from, f.to, false, p.num)
		if len(entries) == 0 {
			f.acked = true // nothing left that the peer lacks
			continue
		}
		e.sendDelta(p, f.from, f.to, entries, size)
		f.sentAt = now
		fired = true
	}
	e.absorb(p)
	return fired
}

// onDelta hands the entries to the node with an acknowledgement of the range,
// and notes whether we now hold everything the peer had.
func (e *Engine) onDelta(now time.Time, p *peer, m *Message) {
	// We hold everything of the peer's log up to m.Acked if the delta was
	// meant for this incarnation of ours, so with m's range we are caught up
	// when the range reaches the head and starts at or below Acked. A range
	// from 0 needs no such promise.
	if m.ToSeq == m.Head && (m.FromSeq == 0 || m.ToEpoch == e.cfg.Epoch && m.FromSeq <= m.Acked) {
		if !p.contacted || now.After(p.caughtUp) {
			p.caughtUp = now
		}
		p.contacted = true
	}
	if m.FromSeq == m.ToSeq {
		return // heartbeat
	}
	// The ack is sound whatever epoch of ours the delta was meant for: it
	// vouches only for the range it carried.
	ack := e.reply(p, Message{Kind: KindAck, FromSeq: m.FromSeq, ToSeq: m.ToSeq})
	e.apply(p, m.Entries, ack)
}

// onAck advances p's cursor over contiguously acknowledged ranges.
func (e *Engine) onAck(now time.Time, p *peer, m *Message) {
	if m.ToEpoch != e.cfg.Epoch {
		return // for a delta of an earlier incarnation of ours: other seqs
	}
	before := p.cursor
	if m.FromSeq <= p.cursor {
		p.cursor = max(p.cursor, m.ToSeq)
	} else {
		for i := range p.inflight {
			if f := &p.inflight[i]; f.from == m.FromSeq && f.to == m.ToSeq {
				f.acked = true
			}
		}
	}
	e.absorb(p)
	if p.cursor > before {
		e.shipDeltas(now, p, true)
	}
}

// absorb drops the flights the cursor has passed and moves the cursor over
// acknowledged flights that now touch it.
func (e *Engine) absorb(p *peer) {
	for changed := true; changed; {
		changed = false
		kept := p.inflight[:0]
		for _, f := range p.inflight {
			switch {
			case f.to <= p.cursor:
				changed = true
			case f.acked && f.from <= p.cursor:
				p.cursor = f.to
				changed = true
			default:
				kept = append(kept, f)
			}
		}
		clear(p.inflight[len(kept):])
		p.inflight = kept
	}
}
