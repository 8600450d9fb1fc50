package crdt_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"

	"github.com/tallyhq/tally/crdt"
)

// Hand-built msgpack frames. msgpack codes used:
//
//	0x90-0x9f fixarray, 0xdc array16, 0xdd array32, 0xc0 nil,
//	0x00-0x7f positive fixint, 0xe0-0xff negative fixint,
//	0xcc-0xcf uint8..uint64, 0xa0-0xbf fixstr, 0x80 fixmap, 0xcb float64,
//	0xc4/0xc6 bin8/bin32, 0xdb str32.
func frame(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

var (
	hugeArray32 = []byte{0xdd, 0xff, 0xff, 0xff, 0xff} // array of 2^32-1 elements
	emptyArray  = []byte{0x90}
	pnHeader    = []byte{0x92}
)

// maxSlotsHeader is an array32 header claiming exactly 3·MaxSlots values: the
// largest G-Counter the decoder accepts, with none of its data present.
func maxSlotsHeader(extra int) []byte {
	n := uint32(3*crdt.MaxSlots + extra)
	return []byte{0xdd, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
}

func mustMarshal(t testing.TB, c crdt.PNCounter) []byte {
	t.Helper()
	b, err := c.MarshalBinary()
	if err != nil {
		t.Fatalf("marshal %v: %v", c, err)
	}
	return b
}

// sampleStates are valid states used as fuzz seeds and in table tests.
func sampleStates() []crdt.PNCounter {
	var one crdt.PNCounter
	one.Increment(1, 1, 1)

	var typical crdt.PNCounter
	typical.Increment(1, 1200, epochMs)
	typical.Increment(2, 800, epochMs+5)
	typical.Increment(3, 7, epochMs+9)
	typical.Decrement(2, 15, epochMs+7)

	var extreme crdt.PNCounter
	extreme.Increment(0, math.MaxUint64, math.MaxInt64)
	extreme.Increment(math.MaxUint64, math.MaxUint64, 0)
	extreme.Decrement(1<<63, 1<<32, 1<<31)
	extreme.Decrement(math.MaxUint64-1, 0, 1) // time only, count 0

	var wide crdt.PNCounter // more than 8 slots: the binary-search path
	for r := crdt.ReplicaID(1); r <= 20; r++ {
		wide.Increment(r*0x1000_0000_0000, uint64(r)*1000, epochMs+int64(r))
		if r%3 == 0 {
			wide.Decrement(r*0x1000_0000_0000, uint64(r), epochMs+int64(r))
		}
	}

	var onlyN crdt.PNCounter
	onlyN.Decrement(5, 2, 10)

	return []crdt.PNCounter{{}, one, typical, extreme, wide, onlyN}
}

type hostileCase struct {
	name string
	in   []byte
}

func hostileInputs(t testing.TB) []hostileCase {
	valid := mustMarshal(t, sampleStates()[2])
	cases := []hostileCase{
		{"empty", nil},
		{"huge pn header", hugeArray32},
		{"huge pn header array16", []byte{0xdc, 0xff, 0xff}},
		{"nil pn", []byte{0xc0}},
		{"pn of zero parts", emptyArray},
		{"pn of one part", []byte{0x91, 0x90}},
		{"pn of three parts", []byte{0x93, 0x90, 0x90, 0x90}},
		{"huge P header", frame(pnHeader, hugeArray32)},
		{"huge N header", frame(pnHeader, emptyArray, hugeArray32)},
		{"huge P header array16", frame(pnHeader, []byte{0xdc, 0xff, 0xff}, emptyArray)},
		{"P just over MaxSlots", frame(pnHeader, maxSlotsHeader(3), emptyArray)},
		{"P at MaxSlots, data missing", frame(pnHeader, maxSlotsHeader(0))},
		{"N at MaxSlots, data missing", frame(pnHeader, emptyArray, maxSlotsHeader(0))},
		{"P length not multiple of 3", frame(pnHeader, []byte{0x92, 0x01, 0x01}, emptyArray)},
		{"P length 2^32-2", frame(pnHeader, []byte{0xdd, 0xff, 0xff, 0xff, 0xfe}, emptyArray)},
		{"nil P", frame(pnHeader, []byte{0xc0}, emptyArray)},
		{"map instead of pn", []byte{0x80}},
		{"map instead of P", frame(pnHeader, []byte{0x80}, emptyArray)},
		{"string instead of pn", []byte{0xa1, 'x'}},
		{"huge str32 instead of pn", []byte{0xdb, 0xff, 0xff, 0xff, 0xff}},
		{"string replica", frame(pnHeader, []byte{0x93, 0xa1, 'x', 0x01, 0x01}, emptyArray)},
		{"float count", frame(pnHeader, []byte{0x93, 0x01, 0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0, 0x01}, emptyArray)},
		{"bool count", frame(pnHeader, []byte{0x93, 0x01, 0xc3, 0x01}, emptyArray)},
		{"huge bin32 replica", frame(pnHeader, []byte{0x93, 0xc6, 0xff, 0xff, 0xff, 0xff})},
		{"nested array as replica", frame(pnHeader, []byte{0x93, 0x91, 0x01, 0x01, 0x01}, emptyArray)},
		{"negative time fixint", frame(pnHeader, []byte{0x93, 0x01, 0x01, 0xff}, emptyArray)},
		{"time above MaxInt64", frame(pnHeader, []byte{0x93, 0x01, 0x01, 0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0}, emptyArray)},
		{"unsorted replicas", frame(pnHeader, []byte{0x96, 0x02, 0x01, 0x01, 0x01, 0x01, 0x01}, emptyArray)},
		{"duplicate replicas", frame(pnHeader, []byte{0x96, 0x01, 0x01, 0x01, 0x01, 0x02, 0x02}, emptyArray)},
		{"unsorted N replicas", frame(pnHeader, emptyArray, []byte{0x96, 0x09, 0x01, 0x01, 0x08, 0x01, 0x01})},
		// A bottom slot is dropped on decode, but it still has to be in order.
		{"unsorted after bottom slot", frame(pnHeader, []byte{0x96, 0x05, 0x00, 0x00, 0x03, 0x01, 0x01}, emptyArray)},
		{"duplicate of bottom slot", frame(pnHeader, []byte{0x96, 0x03, 0x00, 0x00, 0x03, 0x01, 0x01}, emptyArray)},
		{"trailing byte", frame(valid, []byte{0x00})},
		{"trailing valid pn", frame(valid, valid)},
		{"truncated uint64", frame(pnHeader, []byte{0x93, 0x01, 0xcf, 0x00, 0x00})},
	}
	// Every proper prefix of a valid encoding is truncated input.
	for k, s := range sampleStates() {
		b := mustMarshal(t, s)
		for i := range len(b) {
			cases = append(cases, hostileCase{fmt.Sprintf("sample %d truncated to %d of %d bytes", k, i, len(b)), b[:i]})
		}
	}
	return cases
}

func TestUnmarshalRejectsHostileInput(t *testing.T) {
	for _, tc := range hostileInputs(t) {
		t.Run(tc.name, func(t *testing.T) {
			// The receiver holds a state different from any the inputs could
			// partly decode to (the trailing-bytes cases hold sample 2).
			before := sampleStates()[3]
			c := before.Clone()
			err := c.UnmarshalBinary(tc.in)
			if err == nil {
				t.Fatalf("decoded % x to %v, want an error", tc.in, c)
			}
			if !errors.Is(err, crdt.ErrCorrupt) {
				t.Fatalf("error %q does not wrap ErrCorrupt", err)
			}
			if !c.Equal(before) {
				t.Fatalf("failed decode changed the receiver to %v", c)
			}
		})
	}
}

func TestUnmarshalAcceptsLenientValidInput(t *testing.T) {
	// Non-canonical but well-formed frames decode to the state they describe,
	// and re-encode canonically.
	one := crdt.PNCounter{P: crdt.NewGCounter(crdt.Slot{Replica: 3, Count: 1, Updated: 1})}
	cases := []struct {
		name string
		in   []byte
		want crdt.PNCounter
	}{
		{"canonical", []byte{0x92, 0x93, 0x03, 0x01, 0x01, 0x90}, one},
		{"array16 headers", []byte{0xdc, 0x00, 0x02, 0xdc, 0x00, 0x03, 0x03, 0x01, 0x01, 0xdc, 0x00, 0x00}, one},
		{"wide ints", []byte{0x92, 0x93, 0xcf, 0, 0, 0, 0, 0, 0, 0, 3, 0xcc, 0x01, 0xcd, 0x00, 0x01, 0x90}, one},
		{"bottom slot before, dropped", []byte{0x92, 0x96, 0x01, 0x00, 0x00, 0x03, 0x01, 0x01, 0x90}, one},
		{"bottom slot after, dropped", []byte{0x92, 0x96, 0x03, 0x01, 0x01, 0x04, 0x00, 0x00, 0x90}, one},
		{"only bottom slots", []byte{0x92, 0x93, 0x07, 0x00, 0x00, 0x93, 0x07, 0x00, 0x00}, crdt.PNCounter{}},
		{"nil as zero", []byte{0x92, 0x93, 0x03, 0x01, 0x01, 0x93, 0x04, 0xc0, 0xc0}, one},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c crdt.PNCounter
			if err := c.UnmarshalBinary(tc.in); err != nil {
				t.Fatalf("decode % x: %v", tc.in, err)
			}
			if !c.Equal(tc.want) {
				t.Fatalf("decoded %v, want %v", c, tc.want)
			}
			if got, want := mustMarshal(t, c), mustMarshal(t, tc.want); !bytes.Equal(got, want) {
				t.Fatalf("re-encoded % x, want % x", got, want)
			}
		})
	}
}

func TestUnmarshalRoundTripSamples(t *testing.T) {
	for _, s := range sampleStates() {
		b := mustMarshal(t, s)
		var c crdt.PNCounter
		if err := c.UnmarshalBinary(b); err != nil {
			t.Fatalf("decode %v: %v", s, err)
		}
		if !c.Equal(s) || c.Value() != s.Value() || c.LastUpdated() != s.LastUpdated() {
			t.Fatalf("round trip %v -> %v", s, c)
		}
	}
}

func TestUnmarshalAcceptsMaxSlots(t *testing.T) {
	// The bound is inclusive: a counter of exactly MaxSlots slots round-trips.
	var g crdt.GCounter
	for r := range crdt.MaxSlots {
		g.Increment(crdt.ReplicaID(r), 1, 1)
	}
	c := crdt.PNCounter{P: g}
	b := mustMarshal(t, c)
	var back crdt.PNCounter
	if err := back.UnmarshalBinary(b); err != nil {
		t.Fatalf("decode %d slots: %v", crdt.MaxSlots, err)
	}
	if !back.Equal(c) || back.Value() != crdt.MaxSlots {
		t.Fatalf("round trip of %d slots lost data: value %d", crdt.MaxSlots, back.Value())
	}
	// One more slot is refused.
	g.Increment(crdt.MaxSlots, 1, 1)
	err := back.UnmarshalBinary(mustMarshal(t, crdt.PNCounter{P: g}))
	if !errors.Is(err, crdt.ErrCorrupt) {
		t.Fatalf("decode %d slots: err %v, want ErrCorrupt", crdt.MaxSlots+1, err)
	}
}

func TestUnmarshalHugeLengthAllocatesLittle(t *testing.T) {
	const runs = 100
	const limit = 1 << 20 // bytes, for all runs together
	frames := map[string][]byte{
		"pn header 2^32-1":         hugeArray32,
		"P header 2^32-1":          frame(pnHeader, hugeArray32),
		"N header 2^32-1":          frame(pnHeader, emptyArray, hugeArray32),
		"P header MaxSlots, empty": frame(pnHeader, maxSlotsHeader(0)),
		"N header MaxSlots, empty": frame(pnHeader, emptyArray, maxSlotsHeader(0)),
	}
	for name, in := range frames {
		t.Run(name, func(t *testing.T) {
			decode := func() {
				var c crdt.PNCounter
				if err := c.UnmarshalBinary(in); !errors.Is(err, crdt.ErrCorrupt) {
					t.Fatalf("err %v, want ErrCorrupt", err)
				}
			}
			decode() // warm the decoder pool

			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			for range runs {
				decode()
			}
			runtime.ReadMemStats(&m1)
			if d := m1.TotalAlloc - m0.TotalAlloc; d > limit {
				t.Fatalf("%d decodes of % x allocated %d bytes, want < %d", runs, in, d, limit)
			}

			if allocs := testing.AllocsPerRun(runs, decode); allocs > 20 {
				t.Fatalf("decode of % x made %.0f allocations, want ≤ 20", in, allocs)
			}
		})
	}
}

func TestReplicaIDStringRoundTrip(t *testing.T) {
	for _, r := range []crdt.ReplicaID{0, 1, 0xabc, 1 << 32, 1 << 63, math.MaxUint64 - 1, math.MaxUint64} {
		s := r.String()
		if len(s) != 16 || strings.ToLower(s) != s {
			t.Fatalf("String(%d) = %q, want 16 lowercase hex digits", uint64(r), s)
		}
		got, err := crdt.ParseReplicaID(s)
		if err != nil || got != r {
			t.Fatalf("ParseReplicaID(%q) = %v, %v; want %v", s, got, err, r)
		}
	}
	if got := crdt.ReplicaID(0x1f).String(); got != "000000000000001f" {
		t.Fatalf("String = %q", got)
	}
}

func TestReplicaIDStringRoundTripProperty(t *testing.T) {
	// Property form, over all 64-bit values.
	for _, seed := range []uint64{1, 7, 0x9e3779b97f4a7c15} {
		x := seed
		for range 1000 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			r := crdt.ReplicaID(x)
			got, err := crdt.ParseReplicaID(r.String())
			if err != nil || got != r {
				t.Fatalf("round trip %v -> %v, %v", r, got, err)
			}
		}
	}
}

func TestParseReplicaIDRejectsBadStrings(t *testing.T) {
	bad := []string{
		"",
		"1",
		"000000000000001",    // 15 digits
		"00000000000000001",  // 17 digits
		"10000000000000000",  // 17 digits, overflows
		"1ffffffffffffffff",  // overflows
		"000000000000000g",   // not hex
		"0x00000000000001",   // prefix
		"+000000000000001",   // sign
		"-000000000000001",   // sign
		" 000000000000001",   // space
		"000000000000001 ",   // space
		"00000000_0000001",   // underscore
		"0000000000000001\n", // newline
		"00000000000000é",    // 16 bytes, not hex
	}
	for _, s := range bad {
		if r, err := crdt.ParseReplicaID(s); err == nil {
			t.Errorf("ParseReplicaID(%q) = %v, want error", s, r)
		}
	}
}

func TestIncrementSaturates(t *testing.T) {
	var g crdt.GCounter
	g.Increment(1, math.MaxUint64-1, 10)
	g.Increment(1, 5, 11)
	if s := g.Get(1); s.Count != math.MaxUint64 || s.Updated != 11 {
		t.Fatalf("slot %+v, want count MaxUint64 at 11", s)
	}
	g.Increment(1, math.MaxUint64, 12) // already saturated: stays
	if s := g.Get(1); s.Count != math.MaxUint64 || s.Updated != 12 {
		t.Fatalf("slot %+v, want count MaxUint64 at 12", s)
	}
	// The value saturates too, across slots.
	g.Increment(2, 1, 12)
	if g.Value() != math.MaxUint64 {
		t.Fatalf("Value = %d, want MaxUint64", g.Value())
	}
	var h crdt.GCounter
	h.Increment(1, math.MaxUint64/2+1, 1)
	h.Increment(2, math.MaxUint64/2+1, 1)
	if h.Value() != math.MaxUint64 {
		t.Fatalf("Value = %d, want MaxUint64", h.Value())
	}
	// A PN-Counter with both halves saturated reads 0, not a wrapped number.
	var c crdt.PNCounter
	c.Increment(1, math.MaxUint64, 1)
	c.Decrement(1, math.MaxUint64, 1)
	if c.Value() != 0 {
		t.Fatalf("PN value %d, want 0", c.Value())
	}
}

func TestIncrementTimeNeverMovesBack(t *testing.T) {
	var g crdt.GCounter
	g.Increment(1, 1, 2000)
	g.Increment(1, 1, 1000) // clock stepped back
	if s := g.Get(1); s.Count != 2 || s.Updated != 2000 {
		t.Fatalf("slot %+v, want 2@2000", s)
	}
	g.Increment(2, 1, -50) // negative times are clamped to 0
	if s := g.Get(2); s.Count != 1 || s.Updated != 0 {
		t.Fatalf("slot %+v, want 1@0", s)
	}
	if g.LastUpdated() != 2000 {
		t.Fatalf("LastUpdated %d, want 2000", g.LastUpdated())
	}
}

func TestBottomSlotNeverStored(t *testing.T) {
	var g crdt.GCounter
	g.Increment(1, 0, 0)
	g.Increment(2, 0, -10)
	if g.Len() != 0 {
		t.Fatalf("zero increment stored a slot: %v", g)
	}
	n := crdt.NewGCounter(crdt.Slot{Replica: 3}, crdt.Slot{Replica: 4, Updated: -1})
	if n.Len() != 0 {
		t.Fatalf("NewGCounter stored a bottom slot: %v", n)
	}
	if g.Merge(n) || g.Len() != 0 {
		t.Fatalf("merging bottom slots changed the counter: %v", g)
	}
	if got := g.Get(3); got != (crdt.Slot{Replica: 3}) {
		t.Fatalf("Get of a missing replica = %+v, want its bottom slot", got)
	}
	if g.LastUpdated() != 0 || g.Value() != 0 {
		t.Fatalf("empty counter: LastUpdated %d Value %d", g.LastUpdated(), g.Value())
	}

	// A zero-count increment with a time is not bottom: it is kept.
	g.Increment(5, 0, 7)
	if g.Len() != 1 || g.Get(5) != (crdt.Slot{Replica: 5, Updated: 7}) {
		t.Fatalf("time-only slot lost: %v", g)
	}

	// An empty PN-Counter encodes as two empty arrays, and a decoded bottom
	// slot is dropped.
	var c crdt.PNCounter
	c.Increment(1, 0, 0)
	c.Decrement(1, 0, 0)
	if !c.IsZero() {
		t.Fatalf("PN-Counter stored bottom slots: %v", c)
	}
	if b := mustMarshal(t, c); !bytes.Equal(b, []byte{0x92, 0x90, 0x90}) {
		t.Fatalf("empty encoding % x", b)
	}
	if err := c.UnmarshalBinary([]byte{0x92, 0x93, 0x01, 0x00, 0x00, 0x90}); err != nil || !c.IsZero() {
		t.Fatalf("decoded bottom slot: %v, %v", c, err)
	}
}

func TestContributions(t *testing.T) {
	var c crdt.PNCounter
	c.Increment(1, 5, 1)
	c.Increment(2, 3, 1)
	c.Decrement(1, 2, 2)
	c.Decrement(2, 7, 2) // more unlikes than likes at replica 2
	c.Decrement(3, 1, 2) // replica 3 only ever decremented
	c.Increment(4, 0, 9) // time-only slot

	got := c.Contributions()
	want := map[crdt.ReplicaID]uint64{1: 3, 2: 0, 3: 0, 4: 0}
	if len(got) != len(want) {
		t.Fatalf("Contributions = %v, want %v", got, want)
	}
	for r, v := range want {
		if g, ok := got[r]; !ok || g != v {
			t.Fatalf("Contributions = %v, want %v", got, want)
		}
	}
	if c.Value() != 0 { // ΣP 8 − ΣN 10, clamped
		t.Fatalf("Value %d, want 0", c.Value())
	}
	if len((crdt.PNCounter{}).Contributions()) != 0 {
		t.Fatalf("empty counter has contributions")
	}
}

func TestKeyString(t *testing.T) {
	if got := (crdt.Key{Video: "v123", Event: "view"}).String(); got != "v123/view" {
		t.Fatalf("Key.String = %q", got)
	}
}

// FuzzUnmarshalPNCounter feeds arbitrary bytes to the decoder. Decoding must
// never panic; every error must wrap ErrCorrupt; anything accepted must be a
// well-formed state whose canonical encoding is a fixed point.
func FuzzUnmarshalPNCounter(f *testing.F) {
	for _, s := range sampleStates() {
		f.Add(mustMarshal(f, s))
	}
	for _, h := range hostileInputs(f) {
		f.Add(h.in)
	}
	// Lenient but valid frames.
	f.Add([]byte{0xdc, 0x00, 0x02, 0xdc, 0x00, 0x03, 0x03, 0x01, 0x01, 0xdc, 0x00, 0x00})
	f.Add([]byte{0x92, 0x96, 0x01, 0x00, 0x00, 0x03, 0x01, 0x01, 0x90})
	f.Add([]byte{0x92, 0x93, 0x03, 0xff, 0x01, 0x93, 0x04, 0xc0, 0xc0})

	f.Fuzz(func(t *testing.T, data []byte) {
		var c crdt.PNCounter
		if err := c.UnmarshalBinary(data); err != nil {
			if !errors.Is(err, crdt.ErrCorrupt) {
				t.Fatalf("error %q does not wrap ErrCorrupt", err)
			}
			if !c.IsZero() {
				t.Fatalf("failed decode left state %v", c)
			}
			return
		}
		for _, g := range []crdt.GCounter{c.P, c.N} {
			s := g.Slots()
			for i, sl := range s {
				if i > 0 && s[i-1].Replica >= sl.Replica {
					t.Fatalf("decoded unsorted slots %v from % x", g, data)
				}
				if sl.Updated < 0 || sl.Count == 0 && sl.Updated == 0 {
					t.Fatalf("decoded bad slot %+v from % x", sl, data)
				}
			}
		}

		enc, err := c.MarshalBinary()
		if err != nil {
			t.Fatalf("re-encode %v: %v", c, err)
		}
		var d crdt.PNCounter
		if err := d.UnmarshalBinary(enc); err != nil {
			t.Fatalf("decode of re-encoded % x: %v", enc, err)
		}
		if !d.Equal(c) || d.Value() != c.Value() {
			t.Fatalf("round trip changed state: %v -> %v", c, d)
		}
		enc2, err := d.MarshalBinary()
		if err != nil {
			t.Fatalf("re-encode %v: %v", d, err)
		}
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not canonical: % x then % x", enc, enc2)
		}
		// Merging a decoded state is well-behaved too.
		m := c.Clone()
		if m.Merge(d) || !m.Equal(c) {
			t.Fatalf("c⊔c changed c")
		}
	})
}
