package store

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tallyhq/tally/crdt"
)

// FuzzDecodeStored feeds arbitrary bytes to every decoder of stored records
// (a disk can hand back anything): claim sets, raw events, counter and claim
// keys. None may panic or allocate without bound; whatever decodes must
// re-encode to something that decodes to the same value.
func FuzzDecodeStored(f *testing.F) {
	claims := crdt.NewClaims(1, 2)
	claims.Merge(crdt.NewClaims(3, 1))
	cv, _ := claims.State().MarshalBinary()
	ev, _ := msgpack.Marshal(&Event{Video: "v", Event: "view", User: "u", IngestMs: 5, Replica: 9, Fate: FateCounted})
	f.Add(cv)
	f.Add(ev)
	f.Add(CounterKey(crdt.Key{Video: "v", Event: "view"}))
	f.Add(claimKeyBytes(ClaimKey{Video: "v", User: "u", Window: 7}))
	f.Add([]byte{0x92, 0x91, 0x93, 0xcf, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 0x90})
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff}) // array of 2^32-1 elements, no bytes
	var eb EventBlock
	eb.Add("v", "view", "u", 7, FateCounted)
	eb.Add("v2", "unlike", "u", -1, FateReapplied)
	f.Add(eb.Mutations(1, 2, func() uint64 { return 3 }, 0)[0].Value)
	f.Add([]byte{eventBlockTag, 0xff, 0xff, 0xff, 0xff}) // 2^32-1 events, no bytes
	var cb ClaimBlock
	cb.Add(ClaimKey{Video: "v", User: "u", Window: 1}, 100)
	cb.Add(ClaimKey{Video: "w", Event: "share", User: "u", Window: 1}, 1_700_000_000_000)
	f.Add(cb.Mutations(1, 2, func() uint64 { return 3 }, 0)[0].Value)
	f.Add([]byte{claimBlockTag, 0xff, 0xff, 0xff, 0xff})
	var cl CounterLog
	var lc crdt.PNCounter
	lc.Increment(4, 10, 1_700_000_000_000)
	lc.Decrement(5, 1, 1_700_000_000_001)
	lv, _ := lc.MarshalBinary()
	cl.Add(crdt.Key{Video: "v", Event: "view/m/28333333"}, lv, 1_700_000_060_000)
	cl.Add(crdt.Key{Video: "w", Event: "like"}, lv, 0)
	f.Add(cl.Mutations(func() uint64 { return 1 })[0].Value)
	f.Add([]byte{counterLogTag, 0xff, 0xff, 0xff, 0xff})
	f.Add(append([]byte{counterLogTagV6, 0, 0, 0, 1, 1, 'v', 4, 'v', 'i', 'e', 'w', 0, byte(len(lv))}, lv...)) // format 6
	f.Fuzz(func(t *testing.T, b []byte) {
		// Counter log records: whatever decodes re-encodes to records that
		// decode to the same states.
		type logged struct {
			k   crdt.Key
			c   crdt.PNCounter
			exp int64
		}
		var first, second []logged
		collect := func(into *[]logged) func(crdt.Key, crdt.PNCounter, int64) error {
			return func(k crdt.Key, c crdt.PNCounter, exp int64) error {
				*into = append(*into, logged{k, c, exp})
				return nil
			}
		}
		if err := decodeCounterLog(b, collect(&first)); err == nil && len(first) > 0 {
			if len(first)*minLogStateBytes > len(b) {
				t.Fatalf("%d states from %d bytes", len(first), len(b))
			}
			var again CounterLog
			for _, l := range first {
				v, err := l.c.MarshalBinary()
				if err != nil {
					t.Fatalf("re-encode %s: %v", l.k, err)
				}
				if !again.Add(l.k, v, l.exp) {
					t.Fatalf("re-add %s refused", l.k)
				}
			}
			for _, m := range again.Mutations(func() uint64 { return 1 }) {
				if err := decodeCounterLog(m.Value, collect(&second)); err != nil {
					t.Fatalf("re-encoded log: %v", err)
				}
			}
			if len(second) != len(first) {
				t.Fatalf("%d states re-decode to %d", len(first), len(second))
			}
			for i := range first {
				if first[i].k != second[i].k || first[i].exp != second[i].exp || !first[i].c.Equal(second[i].c) {
					t.Fatalf("state %d: %+v re-decodes to %+v", i, first[i], second[i])
				}
			}
		}
		// Claim blocks: whatever decodes re-encodes to the same bytes, each
		// claim the block's replica's alone, in the key's window.
		blockKey := claimBlockKey(1, 2, 3)
		var claims []ClaimKey
		var times []int64
		if err := decodeClaimBlock(blockKey, b, func(k ClaimKey, c crdt.Claims) error {
			if r, ms, ok := c.Winner(); !ok || r != 2 || c.Len() != 1 || k.Window != 1 {
				t.Fatalf("claim block gave %v for %+v", c, k)
			} else {
				times = append(times, ms)
			}
			claims = append(claims, k)
			return nil
		}); err == nil {
			if len(claims)*minClaimBytes > len(b) {
				t.Fatalf("%d claims from %d bytes", len(claims), len(b))
			}
			var again ClaimBlock
			for i, k := range claims {
				again.Add(k, times[i])
			}
			if len(claims) > 0 && len(b) <= MaxBlockBytes-binary.MaxVarintLen64 {
				if enc := again.Mutations(1, 2, func() uint64 { return 3 }, 0)[0].Value; !bytes.Equal(enc, b) {
					t.Fatalf("claim block round trip: %x vs %x", enc, b)
				}
			}
		}
		// Event blocks: whatever decodes re-encodes to the same bytes, and
		// holds no more events than its bytes allow.
		var evs []Event
		if err := decodeEventBlock(b, 1, 2, func(e Event) error { evs = append(evs, e); return nil }); err == nil {
			if len(evs)*minEventBytes > len(b) {
				t.Fatalf("%d events from %d bytes", len(evs), len(b))
			}
			var again EventBlock
			for _, e := range evs {
				if e.IngestMs != 1 || e.Replica != 2 {
					t.Fatalf("event %+v does not carry the key's time and replica", e)
				}
				again.Add(e.Video, e.Event, e.User, e.ClientMs, e.Fate)
			}
			if len(evs) > 0 && len(b) <= MaxEventBlockBytes-binary.MaxVarintLen64 {
				if enc := again.Mutations(1, 2, func() uint64 { return 3 }, 0)[0].Value; !bytes.Equal(enc, b) {
					t.Fatalf("event block round trip: %x vs %x", enc, b)
				}
			}
		}
		if c, err := decodeClaims(b); err == nil {
			st := c.State()
			enc, err := st.MarshalBinary()
			if err != nil {
				t.Fatalf("decoded claims do not encode: %v", err)
			}
			back, err := decodeClaims(enc)
			if err != nil || !back.Equal(c) {
				t.Fatalf("claims round trip: %v, %v vs %v", err, back, c)
			}
		}
		var e Event
		if err := decodeEvent(b, &e); err == nil {
			enc, err := msgpack.Marshal(&e)
			if err != nil {
				t.Fatalf("decoded event does not encode: %v", err)
			}
			var back Event
			if err := decodeEvent(enc, &back); err != nil || back != e {
				t.Fatalf("event round trip: %v, %+v vs %+v", err, back, e)
			}
		}
		if k, err := ParseCounterKey(b); err == nil && !bytes.Equal(CounterKey(k), b) && !bytes.Contains(b[1:], []byte{0, 0}) {
			// A key with a second separator parses with the separator in
			// the event; only exact round trips of canonical keys are required.
			if _, err := ParseCounterKey(CounterKey(k)); err != nil {
				t.Fatalf("counter key %q: reparse: %v", b, err)
			}
		}
		if k, err := parseClaimKey(b); err == nil {
			back, err := parseClaimKey(claimKeyBytes(k))
			if err != nil || back != k {
				t.Fatalf("claim key %q round trip: %v, %+v vs %+v", b, err, back, k)
			}
		}
	})
}
