package replication

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/tallyhq/tally/crdt"
)

// Source is the node's durable state, read by the engine when it ships keys.
type Source interface {
	// State returns k's current durable state, or the zero value if k has
	// none. The engine keeps the result in outgoing messages, so the node
	// must not mutate it afterwards (return a copy if storage updates in
	// place).
	State(k crdt.Key) crdt.PNCounter
}

// SourceFunc adapts a function to Source.
type SourceFunc func(k crdt.Key) crdt.PNCounter

// State calls f(k).
func (f SourceFunc) State(k crdt.Key) crdt.PNCounter { return f(k) }

// Engine is the replication protocol of one node: a deterministic state
// machine (see the package doc). It is not safe for concurrent use.
type Engine struct {
	cfg Config
	src Source

	ids     map[crdt.Key]keyID
	keys    []keyInfo // by keyID
	buckets []bucket  // by bucketOf
	sums    []uint64  // per bucket: XOR of the stateHash of its keys

	// The change log: log[lo:] holds (seq, key) in seq order; an entry is live
	// iff it is its key's latest seq. live counts live entries.
	head    uint64 // last sequence number assigned
	dropped uint64 // highest seq of a live entry evicted: seqs ≤ dropped may be missing
	log     []logEntry
	lo      int
	live    int

	peers map[NodeID]*peer
	order []NodeID // sorted, for deterministic iteration

	nextSession uint64
	nextPeer    uint32 // numbers peers for keyInfo.echo; never reused
	rejected    uint64 // keys too long for the wire format, never replicated
	scratch     []byte // reused for state encodings
	out         Ready  // built by the current call
}

type logEntry struct {
	seq uint64
	id  keyID
}

// New returns an engine for cfg (zero fields take DefaultConfig's values)
// reading states from src. The node then calls Load for every key it already
// holds, and AddPeer for every live peer.
func New(cfg Config, src Source) (*Engine, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if src == nil {
		return nil, fmt.Errorf("%w: nil Source", ErrConfig)
	}
	return &Engine{
		cfg:     cfg,
		src:     src,
		ids:     make(map[crdt.Key]keyID),
		buckets: make([]bucket, cfg.Buckets),
		sums:    make([]uint64, cfg.Buckets),
		peers:   make(map[NodeID]*peer),
	}, nil
}

// Config returns the engine's configuration, defaults filled in.
func (e *Engine) Config() Config { return e.cfg }

// Changed records that k's state changed and the new state is durable (a
// local increment, or a merge of remote state that changed something). k gets
// the next local sequence number, replacing its place in the change log, and
// its digest bucket is updated. A call that finds the state unchanged since
// the last one is a no-op. Keys with a part longer than MaxKeyPartBytes cannot
// be replicated; they are counted in Status.RejectedKeys and otherwise ignored.
func (e *Engine) Changed(now time.Time, k crdt.Key) {
	_ = now // part of the API so that a later version can pace or age changes
	e.record(k, true, 0)
}

// ChangedFrom is Changed for a merge of an entry of an Apply (from, fromEpoch
// being the Apply's From and FromEpoch) that left k's state equal to the
// entry's state (st.Equal(entry.State) after the merge). That incarnation of
// the peer already holds the new state, so k is not shipped back to it; other
// peers get it as usual. Plain Changed is always correct; this spares the
// echo of every change back to where it came from.
func (e *Engine) ChangedFrom(now time.Time, k crdt.Key, from NodeID, fromEpoch uint64) {
	_ = now
	var echo uint32
	if p := e.peers[from]; p != nil && p.epoch == fromEpoch {
		echo = p.num
	}
	e.record(k, true, echo)
}

// Load registers a key that was durable before this engine started, for the
// digest only: it is not put in the change log. Call it for every stored key
// before the first Changed; peers are then brought up to date by digest
// repair (which AddPeer and a new epoch trigger anyway) instead of a replay of
// every key. A Load after Changed acts as Changed.
func (e *Engine) Load(k crdt.Key) {
	if e.head > e.dropped {
		e.record(k, true, 0)
		return
	}
	if e.head == 0 {
		// Loaded state counts as sequence 1, already dropped from the log, so
		// that no peer is thought caught up before a repair.
		e.head, e.dropped = 1, 1
	}
	e.record(k, false, 0)
}

func (e *Engine) record(k crdt.Key, logged bool, echo uint32) {
	if len(k.Video) > MaxKeyPartBytes || len(k.Event) > MaxKeyPartBytes {
		e.rejected++
		return
	}
	st := e.src.State(k)
	enc, err := st.AppendBinary(e.scratch[:0])
	if err != nil {
		e.rejected++
		return
	}
	e.scratch = enc
	h := stateHash(k, enc, st.IsZero())
	id, known := e.ids[k]
	if !known {
		if h == 0 {
			return
		}
		if uint64(len(e.keys)) >= math.MaxUint32 {
			e.rejected++
			return
		}
		id = keyID(len(e.keys))
		e.ids[k] = id
		e.keys = append(e.keys, keyInfo{key: k})
		bk := &e.buckets[bucketOf(k, len(e.buckets))]
		n := len(bk.ids)
		bk.sorted = n == 0 || bk.sorted && cmpKey(e.keys[bk.ids[n-1]].key, k) < 0
		bk.ids = append(bk.ids, id)
	}
	info := &e.keys[id]
	if known && info.hash == h {
		return
	}
	e.sums[bucketOf(k, len(e.buckets))] ^= info.hash ^ h
	info.hash, info.size, info.echo = h, uint32(len(enc)), echo
	if logged {
		if info.seq <= e.dropped {
			e.live++ // else its older entry goes stale and this one takes its place
		}
		e.head++
		info.seq = e.head
		e.log = append(e.log, logEntry{seq: e.head, id: id})
		e.trimLog()
	}
}

// trimLog enforces LogCapacity and reclaims the space of stale entries.
func (e *Engine) trimLog() {
	for e.live > e.cfg.LogCapacity {
		ent := e.log[e.lo]
		e.log[e.lo] = logEntry{}
		e.lo++
		if e.keys[ent.id].seq == ent.seq {
			e.live--
			e.dropped = ent.seq
		}
	}
	n := len(e.log) - e.lo
	switch {
	case n > 2*e.live+1024:
		kept := e.log[:0]
		for _, ent := range e.log[e.lo:] {
			if e.keys[ent.id].seq == ent.seq {
				kept = append(kept, ent)
			}
		}
		clear(e.log[len(kept):])
		e.log, e.lo = kept, 0
	case e.lo > 1024 && e.lo >= n:
		copy(e.log, e.log[e.lo:])
		clear(e.log[n:])
		e.log, e.lo = e.log[:n], 0
	}
}

// logIndex is the index of the first log entry with seq > after.
func (e *Engine) logIndex(after uint64) int {
	tail := e.log[e.lo:]
	return e.lo + sort.Search(len(tail), func(i int) bool { return tail[i].seq > after })
}

// collect gathers the live log entries with seq in (from, upto], leaving out
// keys whose state came from peer number skip. If bounded, it stops at
// MaxBatchKeys/MaxBatchBytes. It returns the entries, the seq the batch covers
// up to (everything below the first live entry left out) and the entries'
// approximate encoded size.
func (e *Engine) collect(from, upto uint64, bounded bool, skip uint32) (entries []Entry, to uint64, size int) {
	for i := e.logIndex(from); i < len(e.log); i++ {
		ent := e.log[i]
		if ent.seq > upto {
			break
		}
		info := &e.keys[ent.id]
		if info.seq != ent.seq || skip != 0 && info.echo == skip {
			continue
		}
		sz := entrySize(info.key, int(info.size))
		if bounded && (len(entries) == e.cfg.MaxBatchKeys || len(entries) > 0 && size+sz > e.cfg.MaxBatchBytes) {
			return entries, ent.seq - 1, size
		}
		entries = append(entries, Entry{Key: info.key, State: e.src.State(info.key)})
		size += sz
	}
	return entries, upto, size
}

// AddPeer tells the engine that p is alive. A new peer gets a digest repair
// on the next Tick, then deltas. Adding a known peer does nothing (use
// RemovePeer first to start afresh).
func (e *Engine) AddPeer(now time.Time, p NodeID) {
	if p == e.cfg.Self || p == "" || e.peers[p] != nil {
		return
	}
	e.nextPeer++
	e.peers[p] = &peer{
		id:         p,
		num:        e.nextPeer,
		repairDue:  true,
		nextSync:   now,
		nextRepair: now.Add(e.cfg.RepairInterval),
	}
	i, _ := slices.BinarySearch(e.order, p)
	e.order = slices.Insert(e.order, i, p)
}

// RemovePeer forgets p (it left or failed): nothing more is sent to it and
// messages from it are refused with ErrUnknownPeer. All its state is dropped.
func (e *Engine) RemovePeer(p NodeID) {
	if e.peers[p] == nil {
		return
	}
	delete(e.peers, p)
	if i, ok := slices.BinarySearch(e.order, p); ok {
		e.order = slices.Delete(e.order, i, i+1)
	}
}

// Peers returns the current peers, sorted.
func (e *Engine) Peers() []NodeID { return slices.Clone(e.order) }

// Step handles one message that arrived from the network. It returns an
// error, wrapping one of the sentinel errors, for a message that is
// malformed, misrouted, from an unknown peer or from a retired epoch; such a
// message changes nothing. It never panics on any input.
func (e *Engine) Step(now time.Time, m Message) (Ready, error) {
	if err := e.admissible(now, &m); err != nil {
		return Ready{}, fmt.Errorf("step %s from %q: %w", m.Kind, m.From, err)
	}
	p := e.peers[m.From]
	e.heard(now, p, m.FromEpoch)
	switch m.Kind {
	case KindDelta:
		e.onDelta(now, p, &m)
	case KindAck:
		e.onAck(now, p, &m)
	case KindDigest:
		e.onDigest(now, p, &m)
	case KindRepairData:
		e.onRepairData(now, p, &m)
	case KindRepairAck:
		e.onRepairAck(now, p, &m)
	}
	return e.flush(), nil
}

// admissible checks everything that could make Step refuse m, before any
// state changes.
func (e *Engine) admissible(now time.Time, m *Message) error {
	if err := m.check(); err != nil {
		return err
	}
	if m.To != e.cfg.Self {
		return fmt.Errorf("%w: addressed to %q", ErrMisrouted, m.To)
	}
	p := e.peers[m.From]
	if p == nil {
		return ErrUnknownPeer
	}
	if e.staleEpoch(now, p, m.FromEpoch) {
		return fmt.Errorf("%w: epoch %d", ErrStaleEpoch, m.FromEpoch)
	}
	mine := m.ToEpoch == e.cfg.Epoch
	switch {
	case m.Kind == KindAck && mine && m.ToSeq > e.head:
		return fmt.Errorf("%w: ack up to %d beyond log head %d", ErrMalformed, m.ToSeq, e.head)
	case m.Kind == KindRepairData && mine && m.Reply && len(m.Buckets) > 0 && int(m.Buckets[len(m.Buckets)-1]) >= e.cfg.Buckets:
		return fmt.Errorf("%w: bucket %d beyond our %d", ErrMalformed, m.Buckets[len(m.Buckets)-1], e.cfg.Buckets)
	}
	return nil
}

// Tick lets time pass: it resends what timed out, starts due repairs, ships
// deltas (or a heartbeat) to every peer whose SyncInterval is up, and
// continues repair streams. Call it regularly, e.g. every SyncInterval/2.
func (e *Engine) Tick(now time.Time) Ready {
	for _, id := range e.order {
		e.tickPeer(now, e.peers[id])
	}
	return e.flush()
}

func (e *Engine) tickPeer(now time.Time, p *peer) {
	lost := p.cursor < e.dropped
	if lost {
		p.inflight = nil // cannot be resent faithfully; repair takes over
	}
	fired := false
	switch s := p.session; {
	case s == nil && (p.repairDue || lost || !now.Before(p.nextRepair)):
		e.startRepair(now, p)
	case s != nil && now.Sub(s.moved) >= e.cfg.RepairInterval:
		// No progress for so long (the peer may have forgotten its side,
		// e.g. after removing and re-adding us): start afresh.
		e.startRepair(now, p)
	case s != nil && s.out == nil && now.Sub(s.sentAt) >= e.retryDelay(p) && now.Sub(s.moved) >= e.retryDelay(p):
		// The digest or pages of the reply were lost, are slow, or the peer
		// forgot its side (it removed and re-added us mid-reply): ask again
		// in the same session, so that a late reply still counts and a
		// forgetful peer answers afresh. (Found by tally sim --seed 545 --swarm.)
		s.sentAt = now
		e.send(p, Message{Kind: KindDigest, Session: s.id, Sums: s.sums}, 0)
		fired = true
	}
	if s := p.session; s != nil && s.out != nil {
		fired = e.resendPages(now, p, s.out) || fired
		e.fill(now, p, s.out)
	}
	if s := p.resp; s != nil {
		fired = e.resendPages(now, p, s) || fired
		e.fill(now, p, s)
	}
	fired = e.resendDeltas(now, p) || fired
	if !now.Before(p.nextSync) {
		if e.shipDeltas(now, p, false) == 0 {
			e.heartbeat(p)
		}
		p.nextSync = now.Add(e.cfg.SyncInterval)
	}
	if fired {
		p.timeouts++
	}
}

// retryDelay is RetryTimeout, doubled for every timeout in a row while the
// peer stays silent, up to 8·RetryTimeout.
func (e *Engine) retryDelay(p *peer) time.Duration {
	return e.cfg.RetryTimeout << min(p.timeouts, 3)
}

// send queues m for p and accounts for it; entryBytes is the approximate
// encoded size of m's entries.
func (e *Engine) send(p *peer, m Message, entryBytes int) {
	m.From, m.To = e.cfg.Self, p.id
	m.FromEpoch, m.ToEpoch = e.cfg.Epoch, p.epoch
	p.sentMsgs++
	p.sentBytes += uint64(m.sizeWithout() + entryBytes)
	e.out.Messages = append(e.out.Messages, m)
}

// reply builds a message answering one from p (for Apply.Ack) and accounts
// for it.
func (e *Engine) reply(p *peer, m Message) *Message {
	m.From, m.To = e.cfg.Self, p.id
	m.FromEpoch, m.ToEpoch = e.cfg.Epoch, p.epoch
	p.sentMsgs++
	p.sentBytes += uint64(m.sizeWithout())
	return &m
}

func (e *Engine) apply(p *peer, entries []Entry, ack *Message) {
	if len(entries) == 0 {
		if ack != nil {
			e.out.Messages = append(e.out.Messages, *ack) // nothing to make durable first
		}
		return
	}
	e.out.Apply = append(e.out.Apply, Apply{From: p.id, FromEpoch: p.epoch, Entries: entries, Ack: ack})
}

func (e *Engine) flush() Ready {
	r := e.out
	e.out = Ready{}
	return r
}
