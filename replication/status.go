package replication

import "time"

// Status is a snapshot of the engine for metrics, dashboards and tests.
type Status struct {
	Self         NodeID
	Epoch        uint64
	Head         uint64 // last local sequence number
	LogStart     uint64 // sequence numbers ≤ LogStart may have left the log; peers behind it need repair
	LogKeys      int    // keys in the change log
	Keys         int    // keys in the digest
	RejectedKeys uint64 // keys that could not be replicated (a part over MaxKeyPartBytes)
	Peers        []PeerStatus
}

// PeerStatus is the state of replication with one peer.
type PeerStatus struct {
	Peer     NodeID
	Epoch    uint64 // the peer's incarnation; 0 before first contact
	Cursor   uint64 // our log is durable at the peer up to here
	Behind   uint64 // Head - Cursor: sequence numbers not yet acknowledged
	Inflight int    // deltas awaiting acknowledgement
	// LagSeconds is how long ago we last knew we held everything in the
	// peer's log (a delta or heartbeat reaching its head, on top of what we
	// had acknowledged). -1 means unknown: never so far.
	LagSeconds float64
	Repairing  bool   // a repair we started is in progress
	Serving    bool   // we are sending the reply to a repair it started
	Repairs    uint64 // repairs completed with it, started by either side (each moved Cursor)
	Served     uint64 // digests of its that we answered
	// Sent counts messages and approximate encoded bytes we produced for
	// the peer, acknowledgements handed to the node included.
	MessagesSent, BytesSent uint64
	MessagesReceived        uint64
	LastHeard               time.Time // zero if never
}

// Status reports the engine's state at now (used for lag).
func (e *Engine) Status(now time.Time) Status {
	st := Status{
		Self:         e.cfg.Self,
		Epoch:        e.cfg.Epoch,
		Head:         e.head,
		LogStart:     e.dropped,
		LogKeys:      e.live,
		Keys:         len(e.ids),
		RejectedKeys: e.rejected,
		Peers:        make([]PeerStatus, 0, len(e.order)),
	}
	for _, id := range e.order {
		p := e.peers[id]
		ps := PeerStatus{
			Peer:             id,
			Epoch:            p.epoch,
			Cursor:           p.cursor,
			Behind:           e.head - p.cursor,
			Inflight:         len(p.inflight),
			LagSeconds:       -1,
			Repairing:        p.session != nil,
			Serving:          p.resp != nil,
			Repairs:          p.repairs,
			Served:           p.served,
			MessagesSent:     p.sentMsgs,
			BytesSent:        p.sentBytes,
			MessagesReceived: p.recvMsgs,
			LastHeard:        p.lastHeard,
		}
		if p.contacted {
			ps.LagSeconds = max(now.Sub(p.caughtUp).Seconds(), 0)
		}
		st.Peers = append(st.Peers, ps)
	}
	return st
}
