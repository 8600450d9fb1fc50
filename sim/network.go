package sim

import (
	"errors"
	"time"

	"github.com/tallyhq/tally/replication"
)

// network is the simulated network between nodes: per directed link a base
// latency, cuts (messages dropped) and clogs (messages held until the link
// is restored), and per message jitter, loss, duplication and reordering.
type network struct {
	s *Sim
	// latency is the base one-way latency between two nodes.
	latency [][]time.Duration
	// regionLatency is the base latency between two regions.
	regionLatency [][]time.Duration
	cut           [][]int // active cuts per directed link (from, to)
	clog          [][]int // active clogs per directed link
	held          [][][]*packet
}

type packet struct {
	from, to *node
	payload  []byte
	kind     replication.Kind
}

const reorderMax = 300 * time.Millisecond

func (nw *network) init(s *Sim) {
	nw.s = s
	n, r := len(s.nodes), len(s.regions)
	nw.regionLatency = make([][]time.Duration, r)
	for i := range nw.regionLatency {
		nw.regionLatency[i] = make([]time.Duration, r)
	}
	for i := range r {
		nw.regionLatency[i][i] = s.rNet.Between(200*time.Microsecond, time.Millisecond)
		for j := i + 1; j < r; j++ {
			d := s.rNet.Between(20*time.Millisecond, 120*time.Millisecond)
			nw.regionLatency[i][j], nw.regionLatency[j][i] = d, d
		}
	}
	nw.latency = make([][]time.Duration, n)
	nw.cut = make([][]int, n)
	nw.clog = make([][]int, n)
	nw.held = make([][][]*packet, n)
	for i, a := range s.nodes {
		nw.latency[i] = make([]time.Duration, n)
		nw.cut[i] = make([]int, n)
		nw.clog[i] = make([]int, n)
		nw.held[i] = make([][]*packet, n)
		for j, b := range s.nodes {
			nw.latency[i][j] = nw.regionLatency[a.region][b.region]
		}
	}
}

// delay draws one message's transit time on a link.
func (nw *network) delay(from, to *node) time.Duration {
	return nw.latency[from.idx][to.idx] + nw.s.rNet.Exp(nw.s.p.Delay)
}

// send is a node's Transport.Send: the payload leaves now and arrives later,
// or never.
func (nw *network) send(from *node, addr string, payload []byte) {
	s := nw.s
	st := &s.stats
	kind := messageKind(payload)
	st.msgs++
	st.bytes += uint64(len(payload))
	st.msgsByKind[kind]++
	to := s.byAddr[addr]
	if to == nil {
		st.dropUnknown++
		return
	}
	// The caller may reuse payload's array after Send returns.
	pk := &packet{from: from, to: to, payload: append([]byte(nil), payload...), kind: kind}
	if s.faultsOn && s.rNet.Chance(s.p.Loss) {
		st.dropLoss++
		return
	}
	if nw.cut[from.idx][to.idx] > 0 {
		st.dropCut++
		return
	}
	d := nw.delay(from, to)
	if s.faultsOn && s.rNet.Chance(s.p.Reorder) {
		st.reordered++
		d += s.rNet.Between(0, reorderMax)
	}
	s.after(d, func() { nw.deliver(pk) })
	if s.faultsOn && s.rNet.Chance(s.p.Dup) {
		st.duplicated++
		s.after(nw.delay(from, to), func() { nw.deliver(pk) })
	}
}

// messageKind reads a message's kind for the statistics: the third byte of
// the encoding (a msgpack fixarray header, the version, then the kind, both
// small positive fixints), decoding in full only if the layout differs. A
// message that does not decode gets kind 0; its receiver refuses it, which
// fails the run.
func messageKind(payload []byte) replication.Kind {
	if len(payload) > 2 && payload[0]&0xf0 == 0x90 && payload[1] < 0x80 && payload[2] < 0x80 {
		if k := replication.Kind(payload[2]); k >= replication.KindDelta && k <= replication.KindRepairAck {
			return k
		}
	}
	m, err := replication.DecodeMessage(payload)
	if err != nil {
		return 0
	}
	return m.Kind
}

// deliver hands pk to the node now at its address, if the link lets it.
func (nw *network) deliver(pk *packet) {
	s := nw.s
	st := &s.stats
	f, t := pk.from.idx, pk.to.idx
	switch {
	case nw.cut[f][t] > 0:
		st.dropCut++ // cut while in flight
		return
	case nw.clog[f][t] > 0:
		st.held++
		nw.held[f][t] = append(nw.held[f][t], pk)
		return
	case !pk.to.up:
		st.dropDown++
		return
	}
	st.delivered++
	err := pk.to.n.ReplicationReceive(pk.payload)
	switch {
	case err == nil:
	case errors.Is(err, replication.ErrUnknownPeer):
		st.rejectUnknown++ // membership has not (re)admitted the sender yet
	case errors.Is(err, replication.ErrStaleEpoch):
		st.rejectStale++ // a straggler of a dead incarnation
	default:
		s.failf("%s refused a message from %s: %v", pk.to.name, pk.from.name, err)
		return
	}
	s.needCommit(pk.to)
}

// release delivers the messages held on a link that is no longer clogged, in
// the order they were held, spread over a few milliseconds.
func (nw *network) release(f, t int) {
	held := nw.held[f][t]
	nw.held[f][t] = nil
	for i, pk := range held {
		pk := pk
		nw.s.after(nw.latency[f][t]+time.Duration(i)*100*time.Microsecond, func() { nw.deliver(pk) })
	}
}

// setLinks adds d (+1 or -1) to the cut or clog count of each directed link,
// releasing held messages of links that became unclogged.
func (nw *network) setLinks(links [][2]int, clog bool, d int) {
	for _, l := range links {
		if clog {
			nw.clog[l[0]][l[1]] += d
			if nw.clog[l[0]][l[1]] == 0 {
				nw.release(l[0], l[1])
			}
		} else {
			nw.cut[l[0]][l[1]] += d
		}
	}
}

// healAll removes every cut and clog and releases every held message.
func (nw *network) healAll() {
	for i := range nw.cut {
		for j := range nw.cut[i] {
			nw.cut[i][j] = 0
			if nw.clog[i][j] > 0 {
				nw.clog[i][j] = 0
				nw.release(i, j)
			}
		}
	}
}

// cutLinks counts directed links cut or clogged now (for progress lines).
func (nw *network) cutLinks() (cut, clogged int) {
	for i := range nw.cut {
		for j := range nw.cut[i] {
			if nw.cut[i][j] > 0 {
				cut++
			}
			if nw.clog[i][j] > 0 {
				clogged++
			}
		}
	}
	return cut, clogged
}
