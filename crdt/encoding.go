package crdt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

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

// AppendBinary appends the canonical encoding of c to b: the bytes
// EncodeMsgpack writes, produced without a msgpack.Encoder. It grows b at
// most once and never fails; the error is there for encoding.BinaryAppender.
func (c PNCounter) AppendBinary(b []byte) ([]byte, error) {
	// A caller reusing a buffer usually has room for the largest encoding of
	// c; only a short buffer pays for a pass that sizes it exactly.
	if cap(b)-len(b) < c.maxEncodedLen() {
		b = grow(b, c.encodedLen())
	}
	b = append(b, mpFixArray|2)
	b = c.P.appendBinary(b)
	return c.N.appendBinary(b), nil
}

// appendBinary appends the bytes EncodeMsgpack writes for g.
func (g GCounter) appendBinary(b []byte) []byte {
	b = appendArrayLen(b, 3*len(g.slots))
	for _, s := range g.slots {
		b = appendUint(b, uint64(s.Replica))
		b = appendUint(b, s.Count)
		b = appendUint(b, uint64(s.Updated))
	}
	return b
}

// grow returns b with room for n more bytes. A fresh slice (MarshalBinary's)
// is made to size, which costs less than slices.Grow; an existing buffer
// grows as append grows it, so that appending to it again and again stays
// amortized linear.
func grow(b []byte, n int) []byte {
	if cap(b) == 0 {
		return make([]byte, 0, n)
	}
	return slices.Grow(b, n)
}

// maxEncodedLen bounds the length of c's encoding: a PN header, two array32
// headers and a uint64 for every value.
func (c PNCounter) maxEncodedLen() int {
	return 1 + 2*5 + 3*9*(len(c.P.slots)+len(c.N.slots))
}

// encodedLen is the length of c's encoding.
func (c PNCounter) encodedLen() int {
	return 1 + c.P.encodedLen() + c.N.encodedLen()
}

// encodedLen is the length of g's encoding.
func (g GCounter) encodedLen() int {
	n := MsgpackArrayHeaderSize(3 * len(g.slots))
	for _, s := range g.slots {
		n += MsgpackUintSize(uint64(s.Replica)) + MsgpackUintSize(s.Count) + MsgpackUintSize(uint64(s.Updated))
	}
	return n
}

// msgpack codes of the counter encoding (and of the integer forms a decoder
// accepts).
const (
	mpPosFixintMax = 0x7f
	mpNegFixintMin = 0xe0
	mpFixArray     = 0x90
	mpFixArrayMax  = 0x9f
	mpNil          = 0xc0
	mpUint8        = 0xcc
	mpUint16       = 0xcd
	mpUint32       = 0xce
	mpUint64       = 0xcf
	mpInt8         = 0xd0
	mpInt16        = 0xd1
	mpInt32        = 0xd2
	mpInt64        = 0xd3
	mpArray16      = 0xdc
	mpArray32      = 0xdd
)

// appendArrayLen appends an array header as msgpack v5's
// Encoder.EncodeArrayLen writes it: fixarray below 16, then array16, then
// array32.
func appendArrayLen(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, mpFixArray|byte(n))
	case n <= 0xffff:
		return append(b, mpArray16, byte(n>>8), byte(n))
	}
	return binary.BigEndian.AppendUint32(append(b, mpArray32), uint32(n))
}

// MsgpackArrayHeaderSize is the length of the msgpack header of an array of
// n items as msgpack v5's encoder (and this package) writes it: fixarray,
// array16 or array32.
func MsgpackArrayHeaderSize(n int) int {
	switch {
	case n < 16:
		return 1
	case n <= 0xffff:
		return 3
	}
	return 5
}

// appendUint appends v as msgpack v5's Encoder.EncodeUint writes it: the
// shortest of positive fixint, uint8, uint16, uint32 and uint64.
func appendUint(b []byte, v uint64) []byte {
	switch {
	case v <= mpPosFixintMax:
		return append(b, byte(v))
	case v <= 0xff:
		return append(b, mpUint8, byte(v))
	case v <= 0xffff:
		return append(b, mpUint16, byte(v>>8), byte(v))
	case v <= 0xffff_ffff:
		return binary.BigEndian.AppendUint32(append(b, mpUint32), uint32(v))
	}
	return binary.BigEndian.AppendUint64(append(b, mpUint64), v)
}

// MsgpackUintSize is the length of v encoded as msgpack v5's
// Encoder.EncodeUint (and this package) writes it: the shortest of positive
// fixint, uint8, uint16, uint32 and uint64.
func MsgpackUintSize(v uint64) int {
	switch {
	case v <= mpPosFixintMax:
		return 1
	case v <= 0xff:
		return 2
	case v <= 0xffff:
		return 3
	case v <= 0xffff_ffff:
		return 5
	}
	return 9
}

// UnmarshalBinary decodes the form written by MarshalBinary. It accepts
// exactly what DecodeMsgpack accepts, with no trailing bytes: any msgpack
// integer form DecodeUint64 reads (nil as 0; signed forms too, a negative
// value converted to uint64 as DecodeUint64 does), any array header form,
// bottom slots (dropped). Every error wraps ErrCorrupt. On error c is left
// unchanged.
func (c *PNCounter) UnmarshalBinary(b []byte) error {
	n, b, err := readArrayLen(b)
	if err != nil {
		return fmt.Errorf("%w: pn-counter header: %v", ErrCorrupt, err)
	}
	if n != 2 {
		return fmt.Errorf("%w: pn-counter of %d parts, want 2", ErrCorrupt, n)
	}
	var out PNCounter
	if out.P, b, err = readGCounter(b); err != nil {
		return fmt.Errorf("decode P: %w", err)
	}
	if out.N, b, err = readGCounter(b); err != nil {
		return fmt.Errorf("decode N: %w", err)
	}
	if len(b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes after pn-counter", ErrCorrupt, len(b))
	}
	*c = out
	return nil
}

// readGCounter decodes a G-Counter from the start of b, with the checks of
// GCounter.DecodeMsgpack, and returns the bytes after it.
func readGCounter(b []byte) (GCounter, []byte, error) {
	n, b, err := readArrayLen(b)
	if err != nil {
		return GCounter{}, nil, fmt.Errorf("%w: g-counter header: %v", ErrCorrupt, err)
	}
	if n < 0 || n%3 != 0 || n/3 > MaxSlots {
		return GCounter{}, nil, fmt.Errorf("%w: g-counter of %d values (want a multiple of 3, at most %d slots)", ErrCorrupt, n, 3*MaxSlots)
	}
	// Every value takes at least a byte: a longer array cannot be in b, and
	// after this check the slots allocated are bounded by the input's size.
	if n > len(b) {
		return GCounter{}, nil, fmt.Errorf("%w: g-counter of %d values in %d bytes: %v", ErrCorrupt, n, len(b), io.ErrUnexpectedEOF)
	}
	if n == 0 {
		return GCounter{}, b, nil
	}
	slots := make([]Slot, 0, n/3)
	var prev ReplicaID
	off := 0
	for i := 0; i < n/3; i++ {
		var v [3]uint64 // replica, count, updated
		for j := range v {
			// Positive fixints, the common case, are read inline.
			if off < len(b) && b[off] <= mpPosFixintMax {
				v[j] = uint64(b[off])
				off++
				continue
			}
			x, next := readUint(b, off)
			if next < 0 {
				return GCounter{}, nil, fmt.Errorf("%w: g-counter slot %d: %v", ErrCorrupt, i, uintError(b, off))
			}
			v[j], off = x, next
		}
		s := Slot{Replica: ReplicaID(v[0]), Count: v[1], Updated: int64(v[2])}
		if s.Updated < 0 {
			return GCounter{}, nil, fmt.Errorf("%w: g-counter slot %d: time %d out of range", ErrCorrupt, i, v[2])
		}
		// Order is checked against every slot read, dropped bottom slots included.
		if i > 0 && prev >= s.Replica {
			return GCounter{}, nil, fmt.Errorf("%w: g-counter slot %d: replicas not strictly increasing", ErrCorrupt, i)
		}
		prev = s.Replica
		if s.Count == 0 && s.Updated == 0 {
			continue // bottom slots are never stored; accept and drop them
		}
		slots = append(slots, s)
	}
	b = b[off:]
	if len(slots) == 0 {
		slots = nil
	}
	return GCounter{slots: slots}, b, nil
}

// readArrayLen reads an array header as msgpack v5's Decoder.DecodeArrayLen
// does (nil reads as -1) and returns the bytes after it.
func readArrayLen(b []byte) (int, []byte, error) {
	if len(b) == 0 {
		return 0, nil, io.ErrUnexpectedEOF
	}
	c := b[0]
	switch {
	case c >= mpFixArray && c <= mpFixArrayMax:
		return int(c - mpFixArray), b[1:], nil
	case c == mpNil:
		return -1, b[1:], nil
	case c == mpArray16:
		if len(b) < 3 {
			return 0, nil, io.ErrUnexpectedEOF
		}
		return int(binary.BigEndian.Uint16(b[1:])), b[3:], nil
	case c == mpArray32:
		if len(b) < 5 {
			return 0, nil, io.ErrUnexpectedEOF
		}
		return int(binary.BigEndian.Uint32(b[1:])), b[5:], nil
	}
	return 0, nil, fmt.Errorf("invalid code %#02x for an array length", c)
}

// readUint reads the integer at b[off:] as msgpack v5's Decoder.DecodeUint64
// does and returns the offset after it, or -1 if there is no integer there
// (see uintError). Like DecodeUint64 it takes nil as 0 and the signed forms
// too, converting a negative value to uint64 (so -1 reads as 2⁶⁴−1).
func readUint(b []byte, off int) (uint64, int) {
	if off >= len(b) {
		return 0, -1
	}
	c := b[off]
	switch {
	case c <= mpPosFixintMax:
		return uint64(c), off + 1
	case c >= mpNegFixintMin:
		return uint64(int8(c)), off + 1
	}
	p := b[off+1:]
	switch c {
	case mpNil:
		return 0, off + 1
	case mpUint8:
		if len(p) >= 1 {
			return uint64(p[0]), off + 2
		}
	case mpInt8:
		if len(p) >= 1 {
			return uint64(int8(p[0])), off + 2
		}
	case mpUint16:
		if len(p) >= 2 {
			return uint64(binary.BigEndian.Uint16(p)), off + 3
		}
	case mpInt16:
		if len(p) >= 2 {
			return uint64(int16(binary.BigEndian.Uint16(p))), off + 3
		}
	case mpUint32:
		if len(p) >= 4 {
			return uint64(binary.BigEndian.Uint32(p)), off + 5
		}
	case mpInt32:
		if len(p) >= 4 {
			return uint64(int32(binary.BigEndian.Uint32(p))), off + 5
		}
	case mpUint64, mpInt64:
		if len(p) >= 8 {
			return binary.BigEndian.Uint64(p), off + 9
		}
	}
	return 0, -1
}

// uintError says why readUint(b, off) found no integer.
func uintError(b []byte, off int) error {
	if off >= len(b) {
		return io.ErrUnexpectedEOF
	}
	switch c := b[off]; c {
	case mpUint8, mpInt8, mpUint16, mpInt16, mpUint32, mpInt32, mpUint64, mpInt64:
		return fmt.Errorf("integer %#02x: %w", c, io.ErrUnexpectedEOF)
	default:
		return fmt.Errorf("invalid code %#02x for an unsigned integer", c)
	}
}
