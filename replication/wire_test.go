package replication

import (
	"bytes"
	"errors"
	"runtime"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tallyhq/tally/crdt"
)

func genState() *rapid.Generator[crdt.PNCounter] {
	slot := rapid.Custom(func(t *rapid.T) crdt.Slot {
		return crdt.Slot{
			Replica: crdt.ReplicaID(rapid.OneOf(rapid.Uint64Range(0, 5), rapid.Uint64()).Draw(t, "replica")),
			Count:   rapid.OneOf(rapid.Uint64Range(0, 300), rapid.Uint64()).Draw(t, "count"),
			Updated: rapid.OneOf(rapid.Int64Range(0, 3), rapid.Int64Min(0)).Draw(t, "updated"),
		}
	})
	return rapid.Custom(func(t *rapid.T) crdt.PNCounter {
		return crdt.PNCounter{
			P: crdt.NewGCounter(rapid.SliceOfN(slot, 0, 5).Draw(t, "p")...),
			N: crdt.NewGCounter(rapid.SliceOfN(slot, 0, 2).Draw(t, "n")...),
		}
	})
}

func genEntries(t *rapid.T) []Entry {
	part := rapid.OneOf(rapid.StringN(0, 8, -1), rapid.StringN(30, 300, MaxKeyPartBytes))
	return rapid.SliceOfN(rapid.Custom(func(t *rapid.T) Entry {
		return Entry{
			Key:   crdt.Key{Video: part.Draw(t, "video"), Event: part.Draw(t, "event")},
			State: genState().Draw(t, "state"),
		}
	}), 0, 20).Draw(t, "entries")
}

func genU64(t *rapid.T, name string) uint64 {
	return rapid.OneOf(rapid.Uint64Range(0, 200), rapid.Uint64Range(1<<16-2, 1<<16+2), rapid.Uint64()).Draw(t, name)
}

// genMessage draws a valid message of any kind.
func genMessage() *rapid.Generator[Message] {
	return rapid.Custom(func(t *rapid.T) Message {
		id := rapid.OneOf(rapid.StringN(1, 10, -1), rapid.StringN(200, MaxNodeIDBytes, MaxNodeIDBytes))
		m := Message{
			Kind:      Kind(rapid.IntRange(int(KindDelta), int(KindRepairAck)).Draw(t, "kind")),
			From:      NodeID(id.Draw(t, "from")),
			FromEpoch: max(genU64(t, "fromEpoch"), 1),
			ToEpoch:   genU64(t, "toEpoch"),
		}
		m.To = NodeID(id.Filter(func(s string) bool { return s != string(m.From) }).Draw(t, "to"))
		switch m.Kind {
		case KindDelta:
			seqs := []uint64{genU64(t, "s1"), genU64(t, "s2"), genU64(t, "s3")}
			slices.Sort(seqs)
			m.FromSeq, m.ToSeq, m.Head = seqs[0], seqs[1], seqs[2]
			m.Acked = rapid.Uint64Range(0, m.Head).Draw(t, "acked")
			if m.ToSeq > m.FromSeq {
				m.Entries = genEntries(t)
			}
		case KindAck:
			m.FromSeq = genU64(t, "from")
			m.ToSeq = m.FromSeq + 1 + rapid.Uint64Range(0, 1000).Draw(t, "len")
			if m.ToSeq < m.FromSeq {
				m.FromSeq, m.ToSeq = 0, 1
			}
		case KindDigest:
			m.Session = max(genU64(t, "session"), 1)
			m.Sums = make([]uint64, 1<<rapid.IntRange(0, 7).Draw(t, "log2buckets"))
			for i := range m.Sums {
				m.Sums[i] = genU64(t, "sum")
			}
		case KindRepairData:
			m.Session = max(genU64(t, "session"), 1)
			m.Page = uint32(rapid.OneOf(rapid.Uint32Range(0, 3), rapid.Uint32()).Draw(t, "page"))
			m.Final = rapid.Bool().Draw(t, "final")
			m.Reply = rapid.Bool().Draw(t, "reply")
			if m.Reply && m.Page == 0 {
				bs := rapid.SliceOfNDistinct(rapid.Uint32Range(0, MaxBuckets-1), 0, 40, rapid.ID).Draw(t, "buckets")
				slices.Sort(bs)
				m.Buckets = bs
			}
			m.Entries = genEntries(t)
		case KindRepairAck:
			m.Session = max(genU64(t, "session"), 1)
			m.Page = rapid.Uint32().Draw(t, "page")
			m.Reply = rapid.Bool().Draw(t, "reply")
		}
		return m
	})
}

// sameMessage compares messages as the wire sees them: nil and empty slices
// alike, states by Equal.
func sameMessage(a, b Message) bool {
	if a.Kind != b.Kind || a.From != b.From || a.To != b.To || a.FromEpoch != b.FromEpoch || a.ToEpoch != b.ToEpoch ||
		a.FromSeq != b.FromSeq || a.ToSeq != b.ToSeq || a.Head != b.Head || a.Acked != b.Acked ||
		a.Session != b.Session || a.Page != b.Page || a.Final != b.Final || a.Reply != b.Reply ||
		!slices.Equal(a.Sums, b.Sums) || !slices.Equal(a.Buckets, b.Buckets) || len(a.Entries) != len(b.Entries) {
		return false
	}
	for i := range a.Entries {
		if a.Entries[i].Key != b.Entries[i].Key || !a.Entries[i].State.Equal(b.Entries[i].State) {
			return false
		}
	}
	return true
}

// TestWireRoundTrip: every valid message decodes to itself, and the size the
// engine estimates for batching is the exact encoded size.
func TestWireRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		m := genMessage().Draw(t, "m")
		b, err := EncodeMessage(m)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		got, err := DecodeMessage(b)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if !sameMessage(m, got) {
			t.Fatalf("round trip\n%+v\n%+v", m, got)
		}
		want := m.sizeWithout()
		for _, e := range m.Entries {
			enc, _ := e.State.MarshalBinary()
			want += entrySize(e.Key, len(enc))
		}
		if len(b) != want {
			t.Fatalf("encoded %d bytes, estimated %d", len(b), want)
		}
		again, _ := EncodeMessage(got)
		if !bytes.Equal(again, b) {
			t.Fatal("re-encoding differs: the encoding is not canonical")
		}
	})
}

func TestEncodeRefusesInvalid(t *testing.T) {
	for _, m := range []Message{
		{},
		{Kind: KindAck, From: "a", To: "b", FromEpoch: 1, FromSeq: 2, ToSeq: 1},
		{Kind: KindDigest, From: "a", To: "b", FromEpoch: 1, Session: 1, Sums: make([]uint64, 2*MaxBuckets)},
		{Kind: KindDelta, From: "a", To: "b", FromEpoch: 1, Sums: []uint64{1}},
	} {
		if _, err := EncodeMessage(m); !errors.Is(err, ErrMalformed) {
			t.Errorf("encode %+v: %v", m, err)
		}
	}
	// A message over the frame limit: few entries with huge states.
	big := crdt.PNCounter{}
	for r := range crdt.MaxSlots {
		big.P.Increment(crdt.ReplicaID(r+1)<<40, 1<<60, 1<<60)
		big.N.Increment(crdt.ReplicaID(r+1)<<40, 1<<60, 1<<60)
	}
	m := Message{Kind: KindRepairData, From: "a", To: "b", FromEpoch: 1, Session: 1}
	for i := range 6 {
		m.Entries = append(m.Entries, Entry{Key: key(i), State: big})
	}
	if _, err := EncodeMessage(m); !errors.Is(err, ErrMalformed) {
		t.Errorf("encode of a %d-entry message of huge states: %v", len(m.Entries), err)
	}
}

// sampleMessages has a valid message of every kind, for seeds and tests.
func sampleMessages() []Message {
	st := crdt.PNCounter{P: crdt.NewGCounter(crdt.Slot{Replica: 1, Count: 7, Updated: 1_700_000_000_000})}
	es := []Entry{{Key: crdt.Key{Video: "v1", Event: "view"}, State: st}, {Key: crdt.Key{Video: "v2", Event: "like"}}}
	h := func(k Kind) Message { return Message{Kind: k, From: "a", To: "b", FromEpoch: 10, ToEpoch: 20} }
	d := h(KindDelta)
	d.FromSeq, d.ToSeq, d.Head, d.Acked, d.Entries = 3, 9, 12, 3, es
	hb := h(KindDelta)
	hb.FromSeq, hb.ToSeq, hb.Head, hb.Acked = 5, 5, 5, 5
	a := h(KindAck)
	a.FromSeq, a.ToSeq = 3, 9
	g := h(KindDigest)
	g.Session, g.Sums = 4, []uint64{1, 1 << 63, 0, 42}
	r := h(KindRepairData)
	r.Session, r.Reply, r.Final, r.Buckets, r.Entries = 4, true, true, []uint32{0, 3, 1000}, es
	r2 := h(KindRepairData)
	r2.Session, r2.Page, r2.Entries = 4, 2, es[:1]
	ra := h(KindRepairAck)
	ra.Session, ra.Page, ra.Reply = 4, 2, true
	return []Message{d, hb, a, g, r, r2, ra}
}

type hostile struct {
	name string
	in   []byte
}

// hostileFrames claim far more than they hold.
func hostileFrames() []hostile {
	hdr := func(kind byte, fields byte) []byte {
		// [1, kind, "a", "b", 1, 0, ...]
		return []byte{0x90 | fields, 0x01, kind, 0xa1, 'a', 0xa1, 'b', 0x01, 0x00}
	}
	huge := []byte{0xdd, 0xff, 0xff, 0xff, 0xff}    // array32 of 2^32-1 elements
	hugeStr := []byte{0xdb, 0xff, 0xff, 0xff, 0xff} // str32 of 2^32-1 bytes
	delta := append(hdr(byte(KindDelta), 11), 0, 1, 1, 0)
	digest := append(hdr(byte(KindDigest), 8), 1)
	repair := append(hdr(byte(KindRepairData), 12), 1, 0, 0xc2, 0xc3)
	return []hostile{
		{"array 2^32", huge},
		{"array 2^32 short", huge[:3]},
		{"empty", nil},
		{"nil", []byte{0xc0}},
		{"map", []byte{0x81, 0x01, 0x01}},
		{"from 2^32 bytes", pad(append(hdr(byte(KindAck), 8)[:3], hugeStr...))},
		{"from 300 bytes", append(append(hdr(byte(KindAck), 8)[:3], 0xda, 0x01, 0x2c), make([]byte, 300)...)},
		{"entries 2^32", append(slices.Clone(delta), huge...)},
		{"entries 65535", append(slices.Clone(delta), 0xdc, 0xff, 0xff)},
		{"entry of 2^32 fields", pad(append(slices.Clone(delta), 0x91, 0xdd, 0xff, 0xff, 0xff, 0xff))},
		{"video 2^32", append(slices.Clone(delta), 0x91, 0x93, 0xdb, 0xff, 0xff, 0xff, 0xff)},
		{"state 2^32 slots", append(slices.Clone(delta), 0x91, 0x93, 0xa0, 0xa0, 0x92, 0xdd, 0xff, 0xff, 0xff, 0xff)},
		{"sums 2^32", append(slices.Clone(digest), huge...)},
		{"sums 65536 in 3 bytes", append(slices.Clone(digest), 0xdd, 0x00, 0x01, 0x00, 0x00, 0x01, 0x02, 0x03)},
		{"buckets 2^32", append(slices.Clone(repair), huge...)},
		{"wrong version", []byte{0x98, 0x02, 0x02, 0xa1, 'a', 0xa1, 'b', 0x01, 0x00, 0x01, 0x02}},
		{"unknown kind", []byte{0x98, 0x01, 0x09, 0xa1, 'a', 0xa1, 'b', 0x01, 0x00, 0x01, 0x02}},
		{"kind 0", []byte{0x98, 0x01, 0x00, 0xa1, 'a', 0xa1, 'b', 0x01, 0x00, 0x01, 0x02}},
		{"field count", []byte{0x97, 0x01, 0x02, 0xa1, 'a', 0xa1, 'b', 0x01, 0x00, 0x01}},
		{"trailing", []byte{0x98, 0x01, 0x02, 0xa1, 'a', 0xa1, 'b', 0x01, 0x00, 0x01, 0x02, 0x00}},
		{"negative seq", []byte{0x98, 0x01, 0x02, 0xa1, 'a', 0xa1, 'b', 0x01, 0x00, 0xff, 0x02}},
		{"page 2^33", []byte{0x99, 0x01, 0x05, 0xa1, 'a', 0xa1, 'b', 0x01, 0x00, 0x01, 0xcf, 0, 0, 0, 2, 0, 0, 0, 0, 0xc2}},
		{"bool as int", []byte{0x99, 0x01, 0x05, 0xa1, 'a', 0xa1, 'b', 0x01, 0x00, 0x01, 0x00, 0x01}},
		{"over frame limit", make([]byte, MaxFrameBytes+1)},
	}
}

func pad(b []byte) []byte { return append(b, make([]byte, 32)...) }

// allocated returns the bytes f allocates (GC statistics; approximate).
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestDecodeHostile: frames that lie about their lengths are refused with
// ErrMalformed after allocating next to nothing.
func TestDecodeHostile(t *testing.T) {
	DecodeMessage(nil) // warm the decoder pool
	for _, h := range hostileFrames() {
		t.Run(h.name, func(t *testing.T) {
			var err error
			n := allocated(func() { _, err = DecodeMessage(h.in) })
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err %v, want ErrMalformed", err)
			}
			t.Logf("%d-byte frame: %v; %d bytes allocated", len(h.in), err, n)
			if limit := uint64(16<<10 + 16*len(h.in)); len(h.in) < MaxFrameBytes && n > limit {
				t.Fatalf("allocated %d bytes for a %d-byte frame (limit %d)", n, len(h.in), limit)
			}
		})
	}
	// Every prefix of every valid message is refused, never a panic.
	for _, m := range sampleMessages() {
		b, err := EncodeMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		for i := range len(b) {
			if _, err := DecodeMessage(b[:i]); !errors.Is(err, ErrMalformed) {
				t.Fatalf("%s prefix %d/%d: %v", m.Kind, i, len(b), err)
			}
		}
	}
}

// FuzzDecodeMessage: any input either decodes to a message that re-encodes
// and decodes to itself, or is refused with ErrMalformed; neither decoding nor
// stepping the result into an engine panics.
func FuzzDecodeMessage(f *testing.F) {
	for _, m := range sampleMessages() {
		b, err := EncodeMessage(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, h := range hostileFrames() {
		if len(h.in) <= 1<<10 {
			f.Add(h.in)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeMessage(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		b, err := EncodeMessage(m)
		if err != nil {
			t.Fatalf("decoded message does not encode: %v\n%+v", err, m)
		}
		again, err := DecodeMessage(b)
		if err != nil || !sameMessage(m, again) {
			t.Fatalf("re-decode: %v\n%+v\n%+v", err, m, again)
		}
		// Whatever decodes is safe to step, addressed to us or not.
		cfg := DefaultConfig(m.To)
		cfg.Epoch = 20
		cfg.Buckets = 4
		e, err := New(cfg, mapSource{})
		if err != nil {
			return // e.g. a To no config accepts
		}
		e.AddPeer(simStart, m.From)
		e.Changed(simStart, key(1))
		e.Tick(simStart)
		if _, err := e.Step(simStart, m); err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrStaleEpoch) {
			t.Fatalf("step: unexpected error %v", err)
		}
		e.Tick(simStart.Add(time.Minute))
	})
}
