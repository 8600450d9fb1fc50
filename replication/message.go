package replication

import (
	"errors"
	"fmt"

	"github.com/tallyhq/tally/crdt"
)

// NodeID is a node's name in the cluster, as membership knows it.
type NodeID string

// Kind says what a Message is.
type Kind uint8

// Message kinds. The zero Kind is invalid.
const (
	// KindDelta ships the states of the keys whose latest sequence number in
	// the sender's log lies in (FromSeq, ToSeq]; Head is the sender's log head
	// and Acked its cursor for the receiver. FromSeq == ToSeq with no entries
	// is a heartbeat and is not acknowledged.
	KindDelta Kind = iota + 1
	// KindAck acknowledges a Delta: the sender (the Delta's receiver) durably
	// holds the states of the range (FromSeq, ToSeq] of the receiver's log.
	// ToSeq is the acknowledged sequence number; FromSeq lets the receiver
	// advance its cursor only over contiguous ranges.
	KindAck
	// KindDigest opens repair Session: Sums holds one XOR-of-hashes per bucket.
	KindDigest
	// KindRepairData is page Page of one side of repair Session. Reply pages
	// come from the digest's receiver; page 0 of the reply lists the differing
	// Buckets (in the initiator's bucket space). Final marks the last page of
	// a side. Pages with entries are acknowledged; empty ones are not.
	KindRepairData
	// KindRepairAck acknowledges RepairData page Page of Session; Reply is
	// copied from the acknowledged page.
	KindRepairAck
)

var kindNames = [...]string{"invalid", "delta", "ack", "digest", "repair-data", "repair-ack"}

// String names k for logs and traces.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Entry is one key's state in a message.
type Entry struct {
	Key   crdt.Key
	State crdt.PNCounter
}

// Message is one protocol message. Every kind carries the header (Kind, From,
// To, FromEpoch, ToEpoch); the other fields belong to the kinds named beside
// them and must be zero in messages of other kinds.
type Message struct {
	Kind      Kind
	From, To  NodeID
	FromEpoch uint64 // the sender's epoch, never 0
	ToEpoch   uint64 // the receiver's epoch as the sender knows it; 0 if unknown

	FromSeq uint64 // Delta, Ack: the range (FromSeq, ToSeq] of the delta sender's log
	ToSeq   uint64 // Delta, Ack
	Head    uint64 // Delta: the sender's log head
	Acked   uint64 // Delta: the sender's cursor for the receiver

	Session uint64   // Digest, RepairData, RepairAck: repair session, chosen by the initiator, never 0
	Sums    []uint64 // Digest: one sum per bucket; the length is a power of two
	Page    uint32   // RepairData, RepairAck: page number within one side of a session
	Final   bool     // RepairData: the last page of this side
	Reply   bool     // RepairData, RepairAck: the page comes from the digest's receiver
	Buckets []uint32 // RepairData: differing buckets, strictly increasing (reply page 0 only)

	Entries []Entry // Delta, RepairData
}

// Ready is what one call into the Engine asks of its caller.
type Ready struct {
	// Messages are to be sent now, in order (the network may still lose,
	// duplicate or reorder them).
	Messages []Message
	// Apply holds remote states to merge into the node.
	Apply []Apply
}

// Apply asks the node to merge remote states.
type Apply struct {
	From      NodeID
	FromEpoch uint64 // the sender's incarnation, for ChangedFrom
	// Entries are to be merged into the node's states. For every key whose
	// state changed, the node calls Engine.Changed once the new state is
	// durable (or ChangedFrom, if the merged state equals the entry's).
	Entries []Entry
	// Ack, if not nil, is to be sent once the merged states are durable (after
	// the group commit that holds them); sending it earlier could lose data
	// the sender then stops resending.
	Ack *Message
}

// Errors returned by Step and the wire codec. They are wrapped with detail.
var (
	// ErrMalformed: the message breaks the protocol's rules (bad field
	// combination, limits exceeded, corrupt encoding).
	ErrMalformed = errors.New("replication: malformed message")
	// ErrMisrouted: the message is addressed to another node, or from us.
	ErrMisrouted = errors.New("replication: message not for this node")
	// ErrUnknownPeer: the sender is not a peer (AddPeer was not called, or
	// RemovePeer was). The message is dropped; the sender will retry.
	ErrUnknownPeer = errors.New("replication: message from unknown peer")
	// ErrStaleEpoch: the sender's epoch is below the peer's current one,
	// which is still speaking: a delayed message of a dead incarnation. The
	// message is dropped.
	ErrStaleEpoch = errors.New("replication: message from a retired epoch")
)

// check verifies the rules every message must keep, whoever receives it.
func (m *Message) check() error {
	if m.Kind < KindDelta || m.Kind > KindRepairAck {
		return fmt.Errorf("%w: unknown kind %d", ErrMalformed, uint8(m.Kind))
	}
	if m.From == "" || len(m.From) > MaxNodeIDBytes || m.To == "" || len(m.To) > MaxNodeIDBytes {
		return fmt.Errorf("%w: %s: node IDs must be 1..%d bytes", ErrMalformed, m.Kind, MaxNodeIDBytes)
	}
	if m.From == m.To {
		return fmt.Errorf("%w: %s: from and to are both %q", ErrMalformed, m.Kind, m.From)
	}
	if m.FromEpoch == 0 {
		return fmt.Errorf("%w: %s: sender epoch 0", ErrMalformed, m.Kind)
	}
	delta := m.Kind == KindDelta
	seqs := delta || m.Kind == KindAck
	repair := m.Kind == KindDigest || m.Kind == KindRepairData || m.Kind == KindRepairAck
	paged := m.Kind == KindRepairData || m.Kind == KindRepairAck
	data := m.Kind == KindRepairData
	switch {
	case !seqs && (m.FromSeq != 0 || m.ToSeq != 0),
		!delta && (m.Head != 0 || m.Acked != 0),
		!repair && m.Session != 0,
		m.Kind != KindDigest && len(m.Sums) != 0,
		!paged && (m.Page != 0 || m.Reply),
		!data && (m.Final || len(m.Buckets) != 0),
		!delta && !data && len(m.Entries) != 0:
		return fmt.Errorf("%w: %s carries fields of another kind", ErrMalformed, m.Kind)
	}
	switch m.Kind {
	case KindDelta:
		if m.FromSeq > m.ToSeq || m.ToSeq > m.Head || m.Acked > m.Head {
			return fmt.Errorf("%w: delta seqs from %d to %d acked %d head %d out of order", ErrMalformed, m.FromSeq, m.ToSeq, m.Acked, m.Head)
		}
		if m.FromSeq == m.ToSeq && len(m.Entries) != 0 {
			return fmt.Errorf("%w: delta with entries for an empty range", ErrMalformed)
		}
	case KindAck:
		if m.FromSeq >= m.ToSeq {
			return fmt.Errorf("%w: ack of empty range (%d, %d]", ErrMalformed, m.FromSeq, m.ToSeq)
		}
	case KindDigest:
		n := len(m.Sums)
		if n < 1 || n > MaxBuckets || n&(n-1) != 0 {
			return fmt.Errorf("%w: digest of %d buckets (want a power of two up to %d)", ErrMalformed, n, MaxBuckets)
		}
	case KindRepairData:
		if len(m.Buckets) != 0 && (!m.Reply || m.Page != 0) {
			return fmt.Errorf("%w: bucket list outside reply page 0", ErrMalformed)
		}
		if len(m.Buckets) > MaxBuckets {
			return fmt.Errorf("%w: %d buckets, limit %d", ErrMalformed, len(m.Buckets), MaxBuckets)
		}
		for i, b := range m.Buckets {
			if b >= MaxBuckets || i > 0 && m.Buckets[i-1] >= b {
				return fmt.Errorf("%w: bucket list not strictly increasing below %d", ErrMalformed, MaxBuckets)
			}
		}
	}
	if repair && m.Session == 0 {
		return fmt.Errorf("%w: %s of session 0", ErrMalformed, m.Kind)
	}
	if len(m.Entries) > MaxEntries {
		return fmt.Errorf("%w: %d entries, limit %d", ErrMalformed, len(m.Entries), MaxEntries)
	}
	for i := range m.Entries {
		e := &m.Entries[i]
		if len(e.Key.Video) > MaxKeyPartBytes || len(e.Key.Event) > MaxKeyPartBytes {
			return fmt.Errorf("%w: entry %d: key part over %d bytes", ErrMalformed, i, MaxKeyPartBytes)
		}
		if e.State.P.Len() > crdt.MaxSlots || e.State.N.Len() > crdt.MaxSlots {
			return fmt.Errorf("%w: entry %d: state over %d slots", ErrMalformed, i, crdt.MaxSlots)
		}
	}
	return nil
}

// Sizes of msgpack items as the encoder writes them (shortest form); uints
// and array headers are crdt's (crdt.MsgpackUintSize,
// crdt.MsgpackArrayHeaderSize).

var (
	uintSize  = crdt.MsgpackUintSize
	arraySize = crdt.MsgpackArrayHeaderSize
)

func strSize(n int) int {
	switch {
	case n < 32:
		return 1 + n
	case n < 256:
		return 2 + n
	case n <= 0xffff:
		return 3 + n
	}
	return 5 + n
}

// entrySize is the encoded size of an entry whose state encodes to stateBytes.
func entrySize(k crdt.Key, stateBytes int) int {
	return 1 + strSize(len(k.Video)) + strSize(len(k.Event)) + stateBytes
}

// sizeWithout is the encoded size of m apart from its entries' bodies (the
// entries array header is included); callers add the entries they measured.
func (m *Message) sizeWithout() int {
	n := 1 + 1 + 1 + strSize(len(m.From)) + strSize(len(m.To)) + uintSize(m.FromEpoch) + uintSize(m.ToEpoch)
	switch m.Kind {
	case KindDelta:
		n += uintSize(m.FromSeq) + uintSize(m.ToSeq) + uintSize(m.Head) + uintSize(m.Acked) + arraySize(len(m.Entries))
	case KindAck:
		n += uintSize(m.FromSeq) + uintSize(m.ToSeq)
	case KindDigest:
		n += uintSize(m.Session) + arraySize(len(m.Sums))
		for _, s := range m.Sums {
			n += uintSize(s)
		}
	case KindRepairData:
		n += uintSize(m.Session) + uintSize(uint64(m.Page)) + 1 + 1 + bucketsSize(m.Buckets) + arraySize(len(m.Entries))
	case KindRepairAck:
		n += uintSize(m.Session) + uintSize(uint64(m.Page)) + 1
	}
	return n
}

func bucketsSize(bs []uint32) int {
	n := arraySize(len(bs))
	for _, b := range bs {
		n += uintSize(uint64(b))
	}
	return n
}
