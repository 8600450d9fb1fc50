package region

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/replication"
	"github.com/tallyhq/tally/store"
)

// Transport delivers encoded replication messages to a peer's replication
// address. It must not block; a dropped message is resent by the protocol.
type Transport interface {
	Send(addr string, payload []byte) error
}

// Peer is another node of the cluster, as membership reports it.
type Peer struct {
	Name     string
	Region   string
	ReplAddr string
	HTTPAddr string
	Replica  crdt.ReplicaID // its current replica ID, if it advertises one
	Alive    bool
}

// ReplicationConfig turns on replication for a node.
type ReplicationConfig struct {
	// Self is this node's name in the cluster.
	Self string
	// Engine tunes the anti-entropy engine; zero fields take its defaults.
	Engine replication.Config
	// Transport carries messages to peers.
	Transport Transport
}

// replicator wires the deterministic engine to the node.
type replicator struct {
	mu        sync.Mutex // protects everything below
	engine    *replication.Engine
	transport Transport
	peers     map[replication.NodeID]Peer
	acks      []pendingAck // acks to send once their batch is durable
	sendErrs  uint64
	// Per peer: messages the transport refused, and what arrived from it.
	peerErrs  map[replication.NodeID]uint64
	recvBytes map[replication.NodeID]uint64
	recvErrs  map[replication.NodeID]uint64 // messages from it the engine refused
	// echoes remembers, per key, the peer whose state a merge adopted whole:
	// if the durable state is still exactly that, the peer already has it and
	// the change is not shipped back to it (Engine.ChangedFrom).
	echoes map[crdt.Key]echo
	// early holds messages from senders membership has not reported yet
	// (a node that just joined talks before gossip reaches us); they are
	// replayed when the sender appears instead of waiting for its retry.
	early []earlyMessage
}

// Bounds of replicator.early.
const (
	maxEarlyMessages = 64
	earlyMessageTTL  = 30 * time.Second
)

type earlyMessage struct {
	at time.Time
	m  replication.Message
}

type echo struct {
	from  replication.NodeID
	epoch uint64
	state crdt.PNCounter
}

type pendingAck struct {
	durable <-chan struct{}
	msg     replication.Message
}

// nodeSource lets the engine read the node's durable states.
type nodeSource struct{ n *Node }

// State implements replication.Source.
func (s nodeSource) State(k crdt.Key) crdt.PNCounter {
	c, err := s.n.durableState(k)
	if err != nil {
		s.n.log.Error("read counter for replication", "key", k.String(), "err", err)
	}
	return c
}

// durableState is k's durable state: from memory, or from disk when k is not
// in memory (without loading it).
//
// A claim set is read from memory, where it may hold a change whose batch is
// not durable yet. That is safe to ship: the engine only knows a claim key
// after its first durable write (Changed is called from the batch's after
// hook), and a later change is either a peer's claim, durable at that peer,
// or this node's compensation, which it redoes after a crash if it was lost.
func (n *Node) durableState(k crdt.Key) (crdt.PNCounter, error) {
	if ck, ok := crdt.ParseClaimKey(k); ok {
		var c crdt.Claims
		if ck.Event == EventLike {
			c, _ = n.likes.get(ck)
		} else {
			c, _ = n.claims.get(ck)
		}
		return c.State(), nil
	}
	if k.IsUnique() {
		return n.uniques.state(k), nil
	}
	if e := n.counters.lookup(k); e != nil {
		return e.durableState(), nil
	}
	c, _, err := n.storedCounter(k)
	return c, err
}

// EnableReplication starts replicating this node's counters. It loads every
// stored counter into memory (the engine's digests cover all keys). Call it
// once, before serving.
func (n *Node) EnableReplication(rc ReplicationConfig) error {
	cfg := rc.Engine
	cfg.Self = replication.NodeID(rc.Self)
	if cfg.Epoch == 0 {
		cfg.Epoch = uint64(n.now().UnixNano())
	}
	eng, err := replication.New(cfg, nodeSource{n})
	if err != nil {
		return fmt.Errorf("enable replication: %w", err)
	}
	var keys []crdt.Key
	since := n.counters.removals()
	err = n.store.ForEachCounter(func(k crdt.Key, c crdt.PNCounter) error {
		if k.IsUnique() {
			return nil // Open loaded the sketches into n.uniques
		}
		n.counters.preload(k, c, since)
		keys = append(keys, k)
		return nil
	})
	if err != nil {
		return fmt.Errorf("enable replication: load counters: %w", err)
	}
	// The claim table holds the live claim sets Open loaded by hash, not by
	// name: their keys are read again from Badger.
	claimKeys, err := n.storedClaimKeys()
	if err != nil {
		return fmt.Errorf("enable replication: %w", err)
	}
	for _, k := range claimKeys {
		keys = append(keys, k.Key())
	}
	for _, k := range n.likes.keys() {
		keys = append(keys, k.Key())
	}
	keys = append(keys, n.uniques.keys()...)
	r := &replicator{
		engine: eng, transport: rc.Transport, peers: make(map[replication.NodeID]Peer), echoes: make(map[crdt.Key]echo),
		peerErrs: map[replication.NodeID]uint64{}, recvBytes: map[replication.NodeID]uint64{}, recvErrs: map[replication.NodeID]uint64{},
	}
	r.mu.Lock()
	for _, k := range keys {
		eng.Load(k) // digest only: peers catch up by repair, not by replaying every key
	}
	r.mu.Unlock()
	if !n.repl.CompareAndSwap(nil, r) {
		return fmt.Errorf("enable replication: already enabled")
	}
	return nil
}

// replicateDurable records keys whose new state is durable in the change log.
func (n *Node) replicateDurable(keys []crdt.Key) {
	r := n.repl.Load()
	if r == nil {
		return
	}
	now := n.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range keys {
		if ec, ok := r.echoes[k]; ok {
			delete(r.echoes, k)
			if st, err := n.durableState(k); err == nil && st.Equal(ec.state) {
				r.engine.ChangedFrom(now, k, ec.from, ec.epoch)
				continue
			}
		}
		r.engine.Changed(now, k)
	}
}

// SetPeers tells the node who its peers are (membership changes). Peers not
// alive are removed from replication until they come back.
func (n *Node) SetPeers(peers []Peer) {
	r := n.repl.Load()
	if r == nil {
		return
	}
	now := n.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := make(map[replication.NodeID]bool)
	for _, p := range peers {
		id := replication.NodeID(p.Name)
		if p.Name == "" || id == r.engine.Config().Self || !p.Alive {
			continue
		}
		seen[id] = true
		old, had := r.peers[id]
		r.peers[id] = p
		if !had || old.ReplAddr != p.ReplAddr {
			r.engine.AddPeer(now, id)
			// The peer is (back) alive: forget the transport's failures
			// towards it rather than wait out a circuit breaker's cooldown.
			if rt, ok := r.transport.(interface{ Reset(addr string) }); ok {
				rt.Reset(p.ReplAddr)
			}
			n.replayEarlyLocked(r, now, id)
		}
	}
	for _, id := range sortedPeerIDs(r.peers) {
		if !seen[id] {
			delete(r.peers, id)
			r.engine.RemovePeer(id)
		}
	}
}

// ReplicationTick advances the engine's clock: deltas, heartbeats, retries,
// periodic repair.
func (n *Node) ReplicationTick() {
	r := n.repl.Load()
	if r == nil {
		return
	}
	n.expireClaims(n.now())
	n.expireBuckets(n.now())
	r.mu.Lock()
	defer r.mu.Unlock()
	n.handleReady(r, r.engine.Tick(n.now()))
}

// ReplicationReceive handles one encoded message from a peer.
func (n *Node) ReplicationReceive(payload []byte) error {
	r := n.repl.Load()
	if r == nil {
		return fmt.Errorf("replication is not enabled")
	}
	m, err := replication.DecodeMessage(payload)
	if err != nil {
		return fmt.Errorf("decode replication message: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := n.now()
	if _, known := r.peers[m.From]; known {
		r.recvBytes[m.From] += uint64(len(payload))
	}
	rd, err := r.engine.Step(now, m)
	if err != nil && !errors.Is(err, replication.ErrUnknownPeer) {
		if _, known := r.peers[m.From]; known {
			r.recvErrs[m.From]++
		}
	}
	if errors.Is(err, replication.ErrUnknownPeer) && len(m.Entries) == 0 {
		// Keep small protocol messages (digests, acks, heartbeats) for a
		// moment; data-carrying ones are resent by their sender anyway.
		if len(r.early) >= maxEarlyMessages {
			r.early = r.early[1:]
		}
		r.early = append(r.early, earlyMessage{at: now, m: m})
	}
	if err != nil {
		return fmt.Errorf("replication message from %s: %w", m.From, err)
	}
	n.handleReady(r, rd)
	return nil
}

// replayEarlyLocked steps the kept messages of peer id, now that it is known.
// Callers hold r.mu.
func (n *Node) replayEarlyLocked(r *replicator, now time.Time, id replication.NodeID) {
	kept := r.early[:0]
	var replay []replication.Message
	for _, e := range r.early {
		switch {
		case now.Sub(e.at) > earlyMessageTTL:
		case e.m.From == id:
			replay = append(replay, e.m)
		default:
			kept = append(kept, e)
		}
	}
	clear(r.early[len(kept):])
	r.early = kept
	for _, m := range replay {
		if rd, err := r.engine.Step(now, m); err == nil {
			n.handleReady(r, rd)
		}
	}
}

// handleReady sends what the engine wants sent and merges what it received.
// Callers hold r.mu.
func (n *Node) handleReady(r *replicator, rd replication.Ready) {
	for _, m := range rd.Messages {
		n.sendLocked(r, m)
	}
	for _, a := range rd.Apply {
		// Counters first: a claim usually travels with the counter change
		// that made it, and a loser that already holds the winner's count
		// does not dip below it when it compensates.
		failed := false
		for pass := range 2 {
			for _, e := range a.Entries {
				if e.Key.IsClaim() != (pass == 1) {
					continue
				}
				if err := n.applyEntry(r, a, e); err != nil {
					n.log.Error("apply replicated state", "from", string(a.From), "key", e.Key.String(), "err", err)
					failed = true // no ack: the peer resends
				}
			}
		}
		if failed {
			n.committer.Kick()
			continue
		}
		if a.Ack == nil {
			n.committer.Kick()
			continue
		}
		// The ack promises durability, so it waits for the batch holding
		// the merged states; flushAcks sends it from the commit goroutine.
		t, err := n.committer.Submit()
		if err != nil {
			continue
		}
		r.acks = append(r.acks, pendingAck{durable: t.Done(), msg: *a.Ack})
	}
}

// applyEntry merges one replicated state. An invalid key is logged and
// dropped (authenticated peers run the same validation); an error means the
// state could not be applied and the message must not be acknowledged.
// Callers hold r.mu.
func (n *Node) applyEntry(r *replicator, a replication.Apply, e replication.Entry) error {
	if ck, ok := crdt.ParseClaimKey(e.Key); ok {
		like := ck.Event == EventLike
		if !validID(ck.Video) || !validID(ck.User) || ck.Event != "" && !validEvent(ck.Event) ||
			like && (ck.Window == 0 || ck.Window > MaxLikeTransitions) {
			n.log.Warn("replicated claim refused", "from", string(a.From), "key", e.Key.String())
			return nil
		}
		if !like && n.claims.expiryMs(ck.Window) <= n.now().UnixMilli() {
			return nil // expired here: nothing needs it any more
		}
		c, err := crdt.ClaimsFromState(e.State)
		if err != nil {
			n.log.Warn("replicated claim refused", "from", string(a.From), "key", e.Key.String(), "err", err)
			return nil
		}
		adopted, err := n.mergeClaims(ck, c)
		if err != nil {
			return err
		}
		n.noteEcho(r, a, e, adopted)
		return nil
	}
	if e.Key.IsUnique() {
		if !validID(e.Key.Video) {
			n.log.Warn("replicated unique-viewer chunk refused", "from", string(a.From), "key", e.Key.String())
			return nil
		}
		changed, err := n.uniques.merge(e.Key, e.State)
		if err != nil {
			n.log.Warn("replicated unique-viewer chunk refused", "from", string(a.From), "key", e.Key.String(), "err", err)
			return nil
		}
		if changed {
			n.committer.Kick()
		}
		n.noteEcho(r, a, e, changed && n.uniques.state(e.Key).Equal(e.State))
		return nil
	}
	b, isBucket := crdt.ParseBucketKey(e.Key)
	if !validID(e.Key.Video) || (isBucket && !validEvent(b.Event)) || (!isBucket && !validEvent(e.Key.Event)) {
		// A key that breaks validation would make the store unreadable at
		// the next start.
		n.log.Warn("replicated key refused", "from", string(a.From), "key", e.Key.String())
		return nil
	}
	if isBucket && n.bucketExpiryMs(b) <= n.now().UnixMilli() {
		return nil // past its retention here: a late delta must not bring it back
	}
	entry, changed, err := n.mergeCounter(e.Key, e.State)
	if err != nil {
		return err
	}
	n.noteEcho(r, a, e, changed && n.counters.liveEquals(entry, e.State))
	return nil
}

// mergeCounter folds a peer's state st of counter k into k's entry, queued
// for the next batch if that changed it, and returns the entry.
func (n *Node) mergeCounter(k crdt.Key, st crdt.PNCounter) (e *counterEntry, changed bool, err error) {
	for {
		if e, err = n.entry(k); err != nil {
			return nil, false, err
		}
		changed, ok := n.counters.merge(e, st)
		if ok {
			return e, changed, nil
		}
		// Evicted since it was resolved: resolve it again.
	}
}

// noteEcho remembers that a merge made k's state exactly the sender's (so
// the change is not shipped back to it), or forgets an older such note.
// Callers hold r.mu.
func (n *Node) noteEcho(r *replicator, a replication.Apply, e replication.Entry, adopted bool) {
	if adopted {
		r.echoes[e.Key] = echo{from: a.From, epoch: a.FromEpoch, state: e.State.Clone()}
	} else {
		delete(r.echoes, e.Key)
	}
}

// flushAcks sends the acks whose batches are durable. It runs after every
// group commit.
func (n *Node) flushAcks() {
	r := n.repl.Load()
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	kept := r.acks[:0]
	for _, a := range r.acks {
		select {
		case <-a.durable:
			n.sendLocked(r, a.msg)
		default:
			kept = append(kept, a)
		}
	}
	clear(r.acks[len(kept):])
	r.acks = kept
}

func (n *Node) sendLocked(r *replicator, m replication.Message) {
	p, ok := r.peers[m.To]
	if !ok {
		return // the peer left; repair catches it up when it is back
	}
	b, err := replication.EncodeMessage(m)
	if err != nil {
		n.log.Error("encode replication message", "to", string(m.To), "err", err)
		return
	}
	if err := r.transport.Send(p.ReplAddr, b); err != nil {
		r.sendErrs++
		r.peerErrs[m.To]++
	}
}

// RunReplication ticks the engine every interval until ctx ends. The server
// runs it in a goroutine; the simulator calls ReplicationTick itself.
func (n *Node) RunReplication(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.ReplicationTick()
		}
	}
}

func sortedPeerIDs(m map[replication.NodeID]Peer) []replication.NodeID {
	ids := make([]replication.NodeID, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// PeerStatus is what this node knows of one peer.
type PeerStatus struct {
	Peer
	replication.PeerStatus
	SendErrors  uint64 // messages to it the transport refused
	RecvBytes   uint64 // encoded bytes received from it
	RecvRefused uint64 // messages from it the engine refused (stale epoch, malformed)
}

// RegionStatus summarises the peers of one region.
type RegionStatus struct {
	Region string
	Peers  int // alive peers known in the region
	// LagSeconds is the freshest lag among the region's peers: how old the
	// newest complete state we have from that region is. -1 if unknown.
	LagSeconds float64
}

// ClusterStatus is the replication state of a node, for /v1/status and metrics.
type ClusterStatus struct {
	Enabled bool
	Engine  replication.Status
	Peers   []PeerStatus
	Regions []RegionStatus
	// SendErrors counts messages the transport refused (queue full, circuit open).
	SendErrors uint64
}

// ClusterStatus samples the node's replication state.
func (n *Node) ClusterStatus() ClusterStatus {
	r := n.repl.Load()
	if r == nil {
		return ClusterStatus{}
	}
	now := n.now()
	r.mu.Lock()
	es := r.engine.Status(now)
	peers := make(map[replication.NodeID]Peer, len(r.peers))
	for id, p := range r.peers {
		peers[id] = p
	}
	perr, rbytes, rerr := maps.Clone(r.peerErrs), maps.Clone(r.recvBytes), maps.Clone(r.recvErrs)
	sendErrs := r.sendErrs
	r.mu.Unlock()

	out := ClusterStatus{Enabled: true, Engine: es, SendErrors: sendErrs}
	regions := map[string]*RegionStatus{}
	for _, ps := range es.Peers {
		p := peers[ps.Peer]
		out.Peers = append(out.Peers, PeerStatus{Peer: p, PeerStatus: ps, SendErrors: perr[ps.Peer], RecvBytes: rbytes[ps.Peer], RecvRefused: rerr[ps.Peer]})
		rs := regions[p.Region]
		if rs == nil {
			rs = &RegionStatus{Region: p.Region, LagSeconds: -1}
			regions[p.Region] = rs
		}
		rs.Peers++
		if ps.LagSeconds >= 0 && (rs.LagSeconds < 0 || ps.LagSeconds < rs.LagSeconds) {
			rs.LagSeconds = ps.LagSeconds
		}
	}
	for _, name := range slices.Sorted(maps.Keys(regions)) {
		out.Regions = append(out.Regions, *regions[name])
	}
	return out
}

// RegionViews splits a video's durable view count by the region of the
// replica that counted it ("" for replicas of no known live member, such as
// a past incarnation of a node).
func (n *Node) RegionViews(video string) (map[string]uint64, error) {
	if err := CheckID(CodeInvalidVideoID, "videoId", video); err != nil {
		return nil, err
	}
	st, err := n.durableState(crdt.Key{Video: video, Event: EventView})
	if err != nil {
		return nil, err
	}
	regionOf := map[crdt.ReplicaID]string{n.id.Replica: n.cfg.Region}
	if r := n.repl.Load(); r != nil {
		r.mu.Lock()
		for _, p := range r.peers {
			if p.Replica != 0 {
				regionOf[p.Replica] = p.Region
			}
		}
		r.mu.Unlock()
	}
	out := map[string]uint64{}
	for rep, v := range st.Contributions() {
		out[regionOf[rep]] += v
	}
	return out, nil
}

// Replicating reports whether EnableReplication was called.
func (n *Node) Replicating() bool { return n.repl.Load() != nil }

// storedClaimKeys returns the key of every stored claim set of a view or
// event type (not a like) whose window has not expired, sorted and each
// once (a deterministic order for the replication engine).
func (n *Node) storedClaimKeys() ([]store.ClaimKey, error) {
	nowMs := n.now().UnixMilli()
	var out []store.ClaimKey
	var mu sync.Mutex // fn is called concurrently
	_, err := n.forEachStoredClaim(nowMs, func(k store.ClaimKey, _ crdt.Claims) error {
		if k.Event != EventLike && n.claims.expiryMs(k.Window) > nowMs {
			mu.Lock()
			out = append(out, k)
			mu.Unlock()
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read claim keys: %w", err)
	}
	slices.SortFunc(out, func(a, b store.ClaimKey) int {
		return cmp.Or(cmp.Compare(a.Video, b.Video), cmp.Compare(a.Event, b.Event), cmp.Compare(a.User, b.User), cmp.Compare(a.Window, b.Window))
	})
	return slices.Compact(out), nil
}
