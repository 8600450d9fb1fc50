package crdt_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
	"pgregory.net/rapid"

	"github.com/tallyhq/tally/crdt"
)

// The hand-written encoder and decoder of encoding.go replaced a path through
// msgpack's Encoder and Decoder. That path is kept here as the reference they
// are held to: the same bytes out, the same inputs accepted, the same states
// read.

// refAppendPNCounter is PNCounter.AppendBinary as it was: EncodeMsgpack
// through a pooled msgpack.Encoder onto a bytes.Buffer.
func refAppendPNCounter(c crdt.PNCounter, b []byte) ([]byte, error) {
	buf := bytes.NewBuffer(b)
	enc := msgpack.GetEncoder()
	defer msgpack.PutEncoder(enc)
	enc.Reset(buf)
	if err := c.EncodeMsgpack(enc); err != nil {
		return nil, fmt.Errorf("encode pn-counter: %w", err)
	}
	return buf.Bytes(), nil
}

// refUnmarshalPNCounter is PNCounter.UnmarshalBinary as it was:
// DecodeMsgpack through a pooled msgpack.Decoder, then the trailing-bytes
// check.
func refUnmarshalPNCounter(b []byte) (crdt.PNCounter, error) {
	r := bytes.NewReader(b)
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	dec.Reset(r)
	var out crdt.PNCounter
	if err := out.DecodeMsgpack(dec); err != nil {
		return crdt.PNCounter{}, err
	}
	if r.Len() != 0 {
		return crdt.PNCounter{}, fmt.Errorf("%w: %d trailing bytes after pn-counter", crdt.ErrCorrupt, r.Len())
	}
	return out, nil
}

func mustRefMarshal(t rapid.TB, c crdt.PNCounter) []byte {
	t.Helper()
	b, err := refAppendPNCounter(c, nil)
	if err != nil {
		t.Fatalf("reference marshal %v: %v", c, err)
	}
	return b
}

// checkEncodingMatchesReference fails unless every way of calling
// AppendBinary, and MarshalBinary, gives the reference encoder's bytes.
func checkEncodingMatchesReference(t rapid.TB, c crdt.PNCounter) {
	t.Helper()
	want := mustRefMarshal(t, c)
	got, err := c.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary(%v): %v", c, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("MarshalBinary(%v) = % x, msgpack encodes % x", c, got, want)
	}
	prefix := []byte("prefix")
	for _, b := range [][]byte{
		nil,
		prefix,                                   // grown: no room at all
		append(make([]byte, 0, 4096), prefix...), // room for any encoding of a small state
		append(make([]byte, 0, len(prefix)+len(want)), prefix...), // exactly enough room
	} {
		b = b[:len(b):cap(b)]
		pre := string(b)
		out, err := c.AppendBinary(b)
		if err != nil {
			t.Fatalf("AppendBinary(%v): %v", c, err)
		}
		if string(out[:len(pre)]) != pre || !bytes.Equal(out[len(pre):], want) {
			t.Fatalf("AppendBinary(%q, %v) = %q, want the prefix then % x", pre, c, out, want)
		}
	}
}

// checkDecodingMatchesReference fails unless UnmarshalBinary and the
// reference decoder agree on data: both reject it (with ErrCorrupt, leaving
// the receiver as it was), or both accept it as the same state, whose
// encoding then matches the reference encoder's.
func checkDecodingMatchesReference(t testing.TB, data []byte) {
	t.Helper()
	want, refErr := refUnmarshalPNCounter(data)
	before := sampleStates()[3]
	got := before.Clone()
	err := got.UnmarshalBinary(data)
	switch {
	case (err == nil) != (refErr == nil):
		t.Fatalf("decode % x: error %v, msgpack's error %v", data, err, refErr)
	case err != nil:
		if !errors.Is(err, crdt.ErrCorrupt) {
			t.Fatalf("decode % x: error %q does not wrap ErrCorrupt", data, err)
		}
		if !got.Equal(before) {
			t.Fatalf("decode % x failed but changed the receiver to %v", data, got)
		}
		return
	}
	if !got.Equal(want) || !got.P.Equal(want.P) || !got.N.Equal(want.N) {
		t.Fatalf("decode % x = %v, msgpack decodes %v", data, got, want)
	}
	checkEncodingMatchesReference(t, got)
}

// intForm is a msgpack encoding of an integer, named by its format.
type intForm struct {
	name string
	enc  []byte
}

// intForms returns every msgpack encoding of v (read as a signed value when
// signed is set) that DecodeUint64 accepts: the fixints, nil for 0, and
// uint8..uint64 and int8..int64 wherever v fits.
func intForms(v uint64, signed bool) []intForm {
	var out []intForm
	add := func(name string, enc ...byte) { out = append(out, intForm{name, enc}) }
	be := func(code byte, n int, x uint64) []byte {
		b := []byte{code}
		for i := n - 1; i >= 0; i-- {
			b = append(b, byte(x>>(8*i)))
		}
		return b
	}
	if signed && int64(v) < 0 {
		s := int64(v)
		if s >= -32 {
			add("negative fixint", byte(s))
		}
		if s >= math.MinInt8 {
			add("int8", be(0xd0, 1, v)...)
		}
		if s >= math.MinInt16 {
			add("int16", be(0xd1, 2, v)...)
		}
		if s >= math.MinInt32 {
			add("int32", be(0xd2, 4, v)...)
		}
		add("int64", be(0xd3, 8, v)...)
		// The unsigned forms of the same 64 bits.
		add("uint64", be(0xcf, 8, v)...)
		return out
	}
	if v == 0 {
		add("nil", 0xc0)
	}
	if v <= 0x7f {
		add("positive fixint", byte(v))
	}
	for _, w := range []struct {
		name     string
		code     byte
		n        int
		max      uint64
		unsigned bool
	}{
		{"uint8", 0xcc, 1, math.MaxUint8, true},
		{"uint16", 0xcd, 2, math.MaxUint16, true},
		{"uint32", 0xce, 4, math.MaxUint32, true},
		{"uint64", 0xcf, 8, math.MaxUint64, true},
		{"int8", 0xd0, 1, math.MaxInt8, false},
		{"int16", 0xd1, 2, math.MaxInt16, false},
		{"int32", 0xd2, 4, math.MaxInt32, false},
		{"int64", 0xd3, 8, math.MaxInt64, false},
	} {
		if v <= w.max {
			add(w.name, be(w.code, w.n, v)...)
		}
	}
	// An int64 holding a value above MaxInt64 (negative as a signed value)
	// still reads as those 64 bits.
	if v > math.MaxInt64 {
		add("int64", be(0xd3, 8, v)...)
	}
	return out
}

// intSamples are values at every boundary of the msgpack integer formats.
var intSamples = []uint64{
	0, 1, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x1_0000,
	math.MaxInt32, 1 << 31, math.MaxUint32, 1 << 32, epochMs,
	math.MaxInt64, 1 << 63, math.MaxUint64 - 1, math.MaxUint64,
}

// negativeSamples are negative values at the boundaries of the signed
// formats, as their 64-bit two's complement.
var negativeSamples = func() (out []uint64) {
	for _, s := range []int64{-1, -32, -33, math.MinInt8, math.MinInt8 - 1, math.MinInt16, math.MinInt16 - 1, math.MinInt32, math.MinInt32 - 1, math.MinInt64} {
		out = append(out, uint64(s))
	}
	return out
}()

// intWidthFrames are single-slot PN-Counters with one of the slot's values
// written in one integer form, for every form of every sample, in each of
// the three positions; and the same frames cut short inside that value.
func intWidthFrames() [][]byte {
	var out [][]byte
	eachIntForm(func(_ uint64, f intForm) {
		for pos := range 3 {
			slot := [][]byte{{0x01}, {0x01}, {0x01}}
			slot[pos] = f.enc
			p := frame(append([][]byte{{0x93}}, slot...)...)
			out = append(out, frame(pnHeader, p, emptyArray))
			out = append(out, frame(pnHeader, emptyArray, p))
			if len(f.enc) > 1 {
				cut := frame(append([][]byte{pnHeader, {0x93}}, slot[:pos]...)...)
				out = append(out, frame(cut, f.enc[:len(f.enc)-1]))
			}
		}
	})
	return out
}

// eachIntForm calls fn with every sample (unsigned, then negative) and each
// integer form it can be written in.
func eachIntForm(fn func(v uint64, f intForm)) {
	for _, signed := range []bool{false, true} {
		samples := intSamples
		if signed {
			samples = negativeSamples
		}
		for _, v := range samples {
			for _, f := range intForms(v, signed) {
				fn(v, f)
			}
		}
	}
}

// headerFrames write the state of sample 2 with every array-header form.
func headerFrames() [][]byte {
	arr16 := func(n int) []byte { return []byte{0xdc, byte(n >> 8), byte(n)} }
	arr32 := func(n int) []byte { return binary.BigEndian.AppendUint32([]byte{0xdd}, uint32(n)) }
	body := []byte{0x01, 0x02, 0x03, 0x04, 0x05, 0x06}
	var out [][]byte
	for _, pn := range [][]byte{{0x92}, arr16(2), arr32(2)} {
		for _, g := range [][]byte{{0x96}, arr16(6), arr32(6)} {
			out = append(out, frame(pn, g, body, g, body))
			out = append(out, frame(pn, g, body, []byte{0xc0}))
		}
	}
	return out
}

func TestUnmarshalIntegerForms(t *testing.T) {
	// Every integer form DecodeUint64 reads is read to the same value, in
	// every position of a slot.
	eachIntForm(func(v uint64, f intForm) {
		in := frame(pnHeader, []byte{0x93, 0x01}, f.enc, []byte{0x01}, emptyArray)
		var c crdt.PNCounter
		if err := c.UnmarshalBinary(in); err != nil {
			t.Fatalf("count %d as %s (% x): %v", v, f.name, f.enc, err)
		}
		if got := c.P.Get(1).Count; got != v {
			t.Fatalf("count %d as %s (% x) read as %d", v, f.name, f.enc, got)
		}
	})
}

func TestUnmarshalMatchesReference(t *testing.T) {
	var frames [][]byte
	for _, s := range sampleStates() {
		frames = append(frames, mustMarshal(t, s))
	}
	for _, h := range hostileInputs(t) {
		frames = append(frames, h.in)
	}
	frames = append(frames, intWidthFrames()...)
	frames = append(frames, headerFrames()...)
	for _, in := range frames {
		checkDecodingMatchesReference(t, in)
	}
}

func TestAppendBinaryMatchesReference(t *testing.T) {
	for _, s := range sampleStates() {
		checkEncodingMatchesReference(t, s)
	}
	// A slot with each field at each boundary of the integer formats.
	for _, v := range intSamples {
		checkEncodingMatchesReference(t, crdt.PNCounter{
			P: crdt.NewGCounter(crdt.Slot{Replica: crdt.ReplicaID(v), Count: v, Updated: int64(v >> 1)}),
			N: crdt.NewGCounter(crdt.Slot{Replica: crdt.ReplicaID(v), Count: 1, Updated: int64(v & math.MaxInt64)}),
		})
	}
	// Array headers: fixarray up to 5 slots, array16 up to 21845, array32
	// beyond (more than MaxSlots: encodable, though no decoder accepts it).
	for _, n := range []int{5, 6, 100, 21845, 21846} {
		slots := make([]crdt.Slot, n)
		for i := range slots {
			slots[i] = crdt.Slot{Replica: crdt.ReplicaID(i), Count: uint64(i) + 1, Updated: epochMs}
		}
		checkEncodingMatchesReference(t, crdt.PNCounter{P: crdt.NewGCounter(slots...), N: crdt.NewGCounter(slots[:n/2]...)})
	}
	rapid.Check(t, func(t *rapid.T) {
		checkEncodingMatchesReference(t, genPNCounter().Draw(t, "c"))
	})
}

func TestEncodingAllocations(t *testing.T) {
	c := sampleStates()[2]
	if n := testing.AllocsPerRun(100, func() { _, _ = c.MarshalBinary() }); n != 1 {
		t.Errorf("MarshalBinary: %.0f allocations, want 1", n)
	}
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { buf, _ = c.AppendBinary(buf[:0]) }); n != 0 {
		t.Errorf("AppendBinary into a large buffer: %.0f allocations, want 0", n)
	}
	enc := mustMarshal(t, c)
	if n := testing.AllocsPerRun(100, func() { _ = c.UnmarshalBinary(enc) }); n != 2 {
		t.Errorf("UnmarshalBinary of P and N: %.0f allocations, want 2", n)
	}
}

// FuzzUnmarshalMatchesReference is the differential fuzz test of the
// hand-written codec against msgpack's: for any input, UnmarshalBinary and
// the msgpack decoder agree on acceptance and on the state read, and the
// encoding of every accepted state is msgpack's encoding of it.
//
//	go test -run=NONE -fuzz=FuzzUnmarshalMatchesReference -fuzztime=2m ./crdt/
func FuzzUnmarshalMatchesReference(f *testing.F) {
	for _, s := range sampleStates() {
		f.Add(mustMarshal(f, s))
	}
	for _, h := range hostileInputs(f) {
		f.Add(h.in)
	}
	for _, in := range intWidthFrames() {
		f.Add(in)
	}
	for _, in := range headerFrames() {
		f.Add(in)
	}
	var regs [crdt.HLLChunkRegisters]uint8
	for i := 0; i < len(regs); i += 5 {
		regs[i] = uint8(i%crdt.HLLMaxRho + 1)
	}
	f.Add(crdt.AppendChunkState(nil, &regs))

	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodingMatchesReference(t, data)
	})
}
