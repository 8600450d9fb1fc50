package crdt

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// MaxSlots bounds the slots one decoded G-Counter may hold. Every node
// incarnation adds at most one slot, so this is far above any real cluster,
// and it caps what a hostile frame can make a decoder allocate (msgpack v5.4.1
// does not check array lengths against the input before allocating).
const MaxSlots = 1 << 14

// ErrCorrupt is wrapped by every decoding error caused by malformed input.
var ErrCorrupt = errors.New("crdt: corrupt encoding")

// The encoding of a G-Counter is a msgpack array of 3·n unsigned integers,
// (replica, count, updated) per slot, sorted by replica with no duplicates.
// A PN-Counter is a msgpack array of two such arrays, [P, N]. The encoding is
// canonical: equal states encode to equal bytes.

var (
	_ msgpack.CustomEncoder = GCounter{}
	_ msgpack.CustomDecoder = (*GCounter)(nil)
	_ msgpack.CustomEncoder = PNCounter{}
	_ msgpack.CustomDecoder = (*PNCounter)(nil)
)

// EncodeMsgpack implements msgpack.CustomEncoder.
func (g GCounter) EncodeMsgpack(enc *msgpack.Encoder) error {
	if err := enc.EncodeArrayLen(3 * len(g.slots)); err != nil {
		return err
	}
	for _, s := range g.slots {
		if err := enc.EncodeUint(uint64(s.Replica)); err != nil {
			return err
		}
		if err := enc.EncodeUint(s.Count); err != nil {
			return err
		}
		if err := enc.EncodeUint(uint64(s.Updated)); err != nil {
			return err
		}
	}
	return nil
}

// DecodeMsgpack implements msgpack.CustomDecoder. It rejects unsorted or
// duplicate replicas, negative times and more than MaxSlots slots.
func (g *GCounter) DecodeMsgpack(dec *msgpack.Decoder) error {
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return fmt.Errorf("%w: g-counter header: %v", ErrCorrupt, err)
	}
	if n < 0 || n%3 != 0 || n/3 > MaxSlots {
		return fmt.Errorf("%w: g-counter of %d values (want a multiple of 3, at most %d slots)", ErrCorrupt, n, 3*MaxSlots)
	}
	slots := make([]Slot, 0, min(n/3, 16)) // grow as input proves itself
	var prev ReplicaID
	for i := 0; i < n/3; i++ {
		var v [3]uint64
		for j := range v {
			if v[j], err = dec.DecodeUint64(); err != nil {
				return fmt.Errorf("%w: g-counter slot %d: %v", ErrCorrupt, i, err)
			}
		}
		s := Slot{Replica: ReplicaID(v[0]), Count: v[1], Updated: int64(v[2])}
		if s.Updated < 0 {
			return fmt.Errorf("%w: g-counter slot %d: time %d out of range", ErrCorrupt, i, v[2])
		}
		// Order is checked against every slot read, dropped bottom slots included.
		if i > 0 && prev >= s.Replica {
			return fmt.Errorf("%w: g-counter slot %d: replicas not strictly increasing", ErrCorrupt, i)
		}
		prev = s.Replica
		if s.Count == 0 && s.Updated == 0 {
			continue // bottom slots are never stored; accept and drop them
		}
		slots = append(slots, s)
	}
	if len(slots) == 0 {
		slots = nil
	}
	g.slots = slots
	return nil
}

// EncodeMsgpack implements msgpack.CustomEncoder.
func (c PNCounter) EncodeMsgpack(enc *msgpack.Encoder) error {
	if err := enc.EncodeArrayLen(2); err != nil {
		return err
	}
	if err := c.P.EncodeMsgpack(enc); err != nil {
		return err
	}
	return c.N.EncodeMsgpack(enc)
}

// DecodeMsgpack implements msgpack.CustomDecoder.
func (c *PNCounter) DecodeMsgpack(dec *msgpack.Decoder) error {
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return fmt.Errorf("%w: pn-counter header: %v", ErrCorrupt, err)
	}
	if n != 2 {
		return fmt.Errorf("%w: pn-counter of %d parts, want 2", ErrCorrupt, n)
	}
	var out PNCounter
	if err := out.P.DecodeMsgpack(dec); err != nil {
		return fmt.Errorf("decode P: %w", err)
	}
	if err := out.N.DecodeMsgpack(dec); err != nil {
		return fmt.Errorf("decode N: %w", err)
	}
	*c = out
	return nil
}

// MarshalBinary encodes c in its canonical msgpack form.
func (c PNCounter) MarshalBinary() ([]byte, error) {
	return c.AppendBinary(nil)
}

// AppendBinary appends the canonical encoding of c to b.
func (c PNCounter) AppendBinary(b []byte) ([]byte, error) {
	buf := bytes.NewBuffer(b)
	enc := msgpack.GetEncoder()
	defer msgpack.PutEncoder(enc)
	enc.Reset(buf)
	if err := c.EncodeMsgpack(enc); err != nil {
		return nil, fmt.Errorf("encode pn-counter: %w", err)
	}
	return buf.Bytes(), nil
}

// UnmarshalBinary decodes the form written by MarshalBinary. Trailing bytes
// are an error. On error c is left unchanged.
func (c *PNCounter) UnmarshalBinary(b []byte) error {
	r := bytes.NewReader(b)
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	dec.Reset(r)
	var out PNCounter
	if err := out.DecodeMsgpack(dec); err != nil {
		return err
	}
	if r.Len() != 0 {
		return fmt.Errorf("%w: %d trailing bytes after pn-counter", ErrCorrupt, r.Len())
	}
	*c = out
	return nil
}
