package crdt_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"testing"

	"github.com/axiomhq/hyperloglog"
	"pgregory.net/rapid"

	"github.com/tallyhq/tally/crdt"
)

// insertHLL inserts user into the flat sketch regs the way a replica does.
func insertHLL(regs *[crdt.HLLRegisters]uint8, user string) {
	c, off, rho := crdt.HLLPosition(user)
	i := c*crdt.HLLChunkRegisters + off
	regs[i] = max(regs[i], rho)
}

// librarySketch is the reference: axiomhq's own dense precision-14 sketch.
func librarySketch(users []string) *hyperloglog.Sketch {
	sk := hyperloglog.NewNoSparse()
	for _, u := range users {
		sk.Insert([]byte(u))
	}
	return sk
}

// libraryRegisters reads the registers of a dense sketch from its version-2
// encoding (8 header bytes, then one byte per register).
func libraryRegisters(t rapid.TB, sk *hyperloglog.Sketch) []byte {
	t.Helper()
	b, err := sk.MarshalBinary()
	if err != nil {
		t.Fatalf("marshal reference sketch: %v", err)
	}
	if len(b) != 8+crdt.HLLRegisters || b[0] != 2 || b[1] != crdt.HLLPrecision || b[3] != 0 {
		t.Fatalf("reference sketch is not dense v2 p=14: header % x, %d bytes", b[:min(len(b), 8)], len(b))
	}
	return b[8:]
}

// genUsers draws user IDs: a few arbitrary strings (empty, unicode, long)
// and a run of generated ones large enough to reach every range of the
// estimator (linear-counting-like below m, LogLog above).
func genUsers() *rapid.Generator[[]string] {
	return rapid.Custom(func(t *rapid.T) []string {
		users := rapid.SliceOfN(rapid.String(), 0, 20).Draw(t, "odd")
		n := rapid.OneOf(
			rapid.IntRange(0, 100),
			rapid.IntRange(0, 5_000),
			rapid.IntRange(10_000, 60_000),
		).Draw(t, "n")
		prefix := rapid.StringMatching(`[a-z0-9:._-]{0,12}`).Draw(t, "prefix")
		for i := range n {
			users = append(users, prefix+strconv.Itoa(i))
		}
		return users
	})
}

func TestHLLPositionMatchesLibrary(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		users := genUsers().Draw(t, "users")
		var regs [crdt.HLLRegisters]uint8
		for _, u := range users {
			c, off, rho := crdt.HLLPosition(u)
			if c < 0 || c >= crdt.HLLChunks || off < 0 || off >= crdt.HLLChunkRegisters || rho < 1 || rho > crdt.HLLMaxRho {
				t.Fatalf("HLLPosition(%q) = (%d, %d, %d) out of range", u, c, off, rho)
			}
			insertHLL(&regs, u)
		}
		ref := librarySketch(users)
		if want := libraryRegisters(t, ref); !bytes.Equal(regs[:], want) {
			for i := range want {
				if regs[i] != want[i] {
					t.Fatalf("register %d = %d, library has %d (%d users)", i, regs[i], want[i], len(users))
				}
			}
		}
		if got, want := crdt.EstimateHLL(&regs), ref.Estimate(); got != want {
			t.Fatalf("EstimateHLL = %d, library Estimate = %d (%d users)", got, want, len(users))
		}
	})
}

func TestEstimateHLLEmptyAndSaturated(t *testing.T) {
	var regs [crdt.HLLRegisters]uint8
	if got := crdt.EstimateHLL(&regs); got != 0 {
		t.Fatalf("empty sketch estimates %d", got)
	}
	// Registers above HLLMaxRho cannot be produced; they count as HLLMaxRho.
	for i := range regs {
		regs[i] = 255
	}
	over := crdt.EstimateHLL(&regs)
	for i := range regs {
		regs[i] = crdt.HLLMaxRho
	}
	if at := crdt.EstimateHLL(&regs); over != at || at == 0 {
		t.Fatalf("saturated: %d with registers 255, %d with registers %d", over, at, crdt.HLLMaxRho)
	}
}

func TestUniqueKey(t *testing.T) {
	for c := range crdt.HLLChunks {
		k := crdt.UniqueKey("v1", c)
		if want := "~uv/" + strconv.Itoa(c); k.Video != "v1" || k.Event != want {
			t.Fatalf("UniqueKey(v1, %d) = %+v, want event %q", c, k, want)
		}
		if !k.IsUnique() || k.IsClaim() {
			t.Fatalf("%v: IsUnique %v IsClaim %v", k, k.IsUnique(), k.IsClaim())
		}
		v, got, ok := crdt.ParseUniqueKey(k)
		if !ok || v != "v1" || got != c {
			t.Fatalf("ParseUniqueKey(%v) = %q, %d, %v", k, v, got, ok)
		}
	}
	for _, ev := range []string{
		"", "view", "~", "~uv", "~uv/", "~uv/64", "~uv/99", "~uv/100", "~uv/00", "~uv/01",
		"~uv/-1", "~uv/+1", "~uv/1 ", "~uv/ 1", "~uv/1a", "~uv/0x1", "~UV/1", "~uv1", "!uv/1", "#uv/1",
		"~uv/18446744073709551617",
	} {
		if _, _, ok := crdt.ParseUniqueKey(crdt.Key{Video: "v", Event: ev}); ok {
			t.Errorf("ParseUniqueKey accepted event %q", ev)
		}
	}
	if (crdt.Key{Video: "v", Event: "view"}).IsUnique() || (crdt.Key{Video: "v"}).IsUnique() {
		t.Fatal("a counter key is unique")
	}
	for _, c := range []int{-1, crdt.HLLChunks} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("UniqueKey(v, %d) did not panic", c)
				}
			}()
			crdt.UniqueKey("v", c)
		}()
	}
	if n := testing.AllocsPerRun(100, func() { _ = crdt.UniqueKey("v", 63) }); n != 0 {
		t.Errorf("UniqueKey allocates %v times", n)
	}
}

// genChunk draws chunk registers: mostly sparse, sometimes fully random.
func genChunk() *rapid.Generator[[crdt.HLLChunkRegisters]uint8] {
	return rapid.Custom(func(t *rapid.T) (regs [crdt.HLLChunkRegisters]uint8) {
		if rapid.Bool().Draw(t, "dense") {
			for i := range regs {
				regs[i] = rapid.Uint8Range(0, crdt.HLLMaxRho).Draw(t, "reg")
			}
			return regs
		}
		n := rapid.IntRange(0, 12).Draw(t, "set")
		for range n {
			off := rapid.IntRange(0, crdt.HLLChunkRegisters-1).Draw(t, "off")
			regs[off] = rapid.OneOf(
				rapid.Uint8Range(1, 4), // what real users mostly produce: collisions
				rapid.Uint8Range(1, crdt.HLLMaxRho),
			).Draw(t, "rho")
		}
		return regs
	})
}

func TestChunkStateRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		regs := genChunk().Draw(t, "regs")
		st := crdt.ChunkState(&regs)
		nonzero := 0
		for _, r := range regs {
			if r != 0 {
				nonzero++
			}
		}
		if st.P.Len() != nonzero || st.N.Len() != 0 || st.IsZero() != (nonzero == 0) {
			t.Fatalf("state %v of %d nonzero registers", st, nonzero)
		}
		for _, s := range st.P.Slots() {
			if s.Updated != 0 || s.Count != uint64(regs[s.Replica]) {
				t.Fatalf("slot %+v for register %d", s, regs[s.Replica])
			}
		}
		// Through the wire encoding and back.
		enc, err := st.MarshalBinary()
		if err != nil {
			t.Fatalf("encode %v: %v", st, err)
		}
		var dec crdt.PNCounter
		if err := dec.UnmarshalBinary(enc); err != nil {
			t.Fatalf("decode %v: %v", st, err)
		}
		var got [crdt.HLLChunkRegisters]uint8
		for i := range got {
			got[i] = 0xaa // overwritten, not merged
		}
		if err := crdt.ChunkFromState(dec, &got); err != nil {
			t.Fatalf("ChunkFromState(%v): %v", dec, err)
		}
		if got != regs {
			t.Fatalf("round trip changed registers:\n%v\n%v", regs, got)
		}
		if again := crdt.ChunkState(&got); !again.Equal(st) {
			t.Fatalf("state not canonical: %v then %v", st, again)
		}
	})
}

func TestAppendChunkStateMatchesMarshal(t *testing.T) {
	check := func(t rapid.TB, regs *[crdt.HLLChunkRegisters]uint8) {
		t.Helper()
		want, err := crdt.ChunkState(regs).MarshalBinary()
		if err != nil {
			t.Fatalf("MarshalBinary: %v", err)
		}
		if got := crdt.AppendChunkState(nil, regs); !bytes.Equal(got, want) {
			t.Fatalf("AppendChunkState(%v) = % x, want % x", *regs, got, want)
		}
		if got := crdt.AppendChunkState([]byte("pre"), regs); string(got[:3]) != "pre" || !bytes.Equal(got[3:], want) {
			t.Fatalf("AppendChunkState after a prefix = %q, want the prefix then % x", got, want)
		}
	}
	var regs [crdt.HLLChunkRegisters]uint8
	check(t, &regs) // empty: the zero PNCounter
	for _, v := range []uint8{1, crdt.HLLMaxRho, 0x7f, 0x80, 0xff} {
		for i := range regs {
			regs[i] = v // full
		}
		check(t, &regs)
	}
	for _, n := range []int{1, 5, 6, 127, 128, 129} { // fixarray to array16 at 6 slots
		regs = [crdt.HLLChunkRegisters]uint8{}
		for i := range n {
			regs[i*37%crdt.HLLChunkRegisters] = uint8(i + 1) // distinct offsets, 37 being odd
		}
		check(t, &regs)
	}
	rapid.Check(t, func(t *rapid.T) {
		regs := genChunk().Draw(t, "regs")
		check(t, &regs)
	})
	rapid.Check(t, func(t *rapid.T) { // any byte, not only what HLLPosition gives
		var regs [crdt.HLLChunkRegisters]uint8
		copy(regs[:], rapid.SliceOfN(rapid.Byte(), crdt.HLLChunkRegisters, crdt.HLLChunkRegisters).Draw(t, "regs"))
		check(t, &regs)
	})
}

func TestChunkFromStateRejects(t *testing.T) {
	valid := crdt.Slot{Replica: 3, Count: 2}
	pn := func(p []crdt.Slot, n ...crdt.Slot) crdt.PNCounter {
		return crdt.PNCounter{P: crdt.NewGCounter(p...), N: crdt.NewGCounter(n...)}
	}
	cases := []struct {
		name string
		st   crdt.PNCounter
	}{
		{"N slot", pn([]crdt.Slot{valid}, crdt.Slot{Replica: 1, Count: 1})},
		{"only N", pn(nil, crdt.Slot{Replica: 1, Count: 1})},
		{"offset 256", pn([]crdt.Slot{valid, {Replica: 256, Count: 1}})},
		{"offset max", pn([]crdt.Slot{{Replica: math.MaxUint64, Count: 1}})},
		{"count 0 with time", pn([]crdt.Slot{{Replica: 1, Count: 0, Updated: 1}})},
		{"count above max rho", pn([]crdt.Slot{{Replica: 1, Count: crdt.HLLMaxRho + 1}})},
		{"count 256 (wraps to 0 in a byte)", pn([]crdt.Slot{{Replica: 1, Count: 256}})},
		{"count 257 (wraps to 1 in a byte)", pn([]crdt.Slot{{Replica: 1, Count: 257}})},
		{"count max", pn([]crdt.Slot{{Replica: 1, Count: math.MaxUint64}})},
		{"time", pn([]crdt.Slot{valid, {Replica: 4, Count: 1, Updated: 1}})},
		{"counter state", func() (c crdt.PNCounter) { c.Increment(1, 1, 1_700_000_000_000); return c }()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dst := [crdt.HLLChunkRegisters]uint8{7: 9}
			err := crdt.ChunkFromState(tc.st, &dst)
			if !errors.Is(err, crdt.ErrBadHLL) {
				t.Fatalf("ChunkFromState(%v) = %v, want ErrBadHLL", tc.st, err)
			}
			if dst != ([crdt.HLLChunkRegisters]uint8{7: 9}) {
				t.Fatalf("rejected state changed dst")
			}
		})
	}
	// The edges are accepted.
	var dst [crdt.HLLChunkRegisters]uint8
	if err := crdt.ChunkFromState(pn([]crdt.Slot{{Replica: 0, Count: 1}, {Replica: 255, Count: crdt.HLLMaxRho}}), &dst); err != nil {
		t.Fatalf("edge state rejected: %v", err)
	}
	if dst[0] != 1 || dst[255] != crdt.HLLMaxRho {
		t.Fatalf("edge registers %d %d", dst[0], dst[255])
	}
	if err := crdt.ChunkFromState(crdt.PNCounter{}, &dst); err != nil || dst != ([crdt.HLLChunkRegisters]uint8{}) {
		t.Fatalf("zero state: %v, registers %v", err, dst)
	}
}

func TestChunkMergeIsRegisterMax(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		chunks := rapid.SliceOfN(genChunk(), 1, 5).Draw(t, "chunks")
		var want [crdt.HLLChunkRegisters]uint8
		for _, c := range chunks {
			for i := range want {
				want[i] = max(want[i], c[i])
			}
		}
		order := rapid.Permutation(chunks).Draw(t, "order")
		var acc crdt.PNCounter
		var accRegs [crdt.HLLChunkRegisters]uint8
		for _, c := range order {
			next := accRegs
			for i := range next {
				next[i] = max(next[i], c[i])
			}
			if changed := acc.Merge(crdt.ChunkState(&c)); changed != (next != accRegs) {
				t.Fatalf("Merge reported changed=%v, registers changed=%v", changed, next != accRegs)
			}
			accRegs = next
		}
		if !acc.Equal(crdt.ChunkState(&want)) {
			t.Fatalf("merged state %v != state of register max %v", acc, crdt.ChunkState(&want))
		}
		var got [crdt.HLLChunkRegisters]uint8
		if err := crdt.ChunkFromState(acc, &got); err != nil {
			t.Fatalf("merged state is not a chunk: %v", err)
		}
		if got != want {
			t.Fatalf("merged registers differ from register max")
		}
	})
}

// TestHLLAccuracy checks the estimate against the true count. Each sketch is
// deterministic (fixed hash seed, fixed user IDs), so this is not flaky.
func TestHLLAccuracy(t *testing.T) {
	ns := []int{100, 10_000, 1_000_000}
	if testing.Short() {
		ns = ns[:2]
	}
	var b []byte
	for _, n := range ns {
		var regs [crdt.HLLRegisters]uint8
		ref := hyperloglog.NewNoSparse()
		for i := range n {
			b = strconv.AppendInt(append(b[:0], "user-"...), int64(i), 10)
			insertHLL(&regs, string(b))
			ref.Insert(b)
		}
		est := crdt.EstimateHLL(&regs)
		if want := ref.Estimate(); est != want {
			t.Fatalf("n=%d: EstimateHLL %d, library %d", n, est, want)
		}
		rel := (float64(est) - float64(n)) / float64(n)
		t.Logf("n=%d: estimate %d, error %+.3f%% (standard error %.2f%%)", n, est, 100*rel, 100*crdt.HLLStdError)
		if math.Abs(rel) > 3*crdt.HLLStdError {
			t.Errorf("n=%d: estimate %d off by %+.3f%%, beyond 3 standard errors", n, est, 100*rel)
		}
	}

	// Over many independent sets the spread matches the stated standard error.
	const trials, n = 64, 10_000
	var sq float64
	for tr := range trials {
		var regs [crdt.HLLRegisters]uint8
		for i := range n {
			b = strconv.AppendInt(append(b[:0], fmt.Sprintf("t%d-", tr)...), int64(i), 10)
			insertHLL(&regs, string(b))
		}
		rel := (float64(crdt.EstimateHLL(&regs)) - n) / n
		sq += rel * rel
	}
	rms := math.Sqrt(sq / trials)
	t.Logf("n=%d over %d sets: RMS error %.3f%%", n, trials, 100*rms)
	if rms > 1.5*crdt.HLLStdError {
		t.Errorf("RMS error %.3f%% is far above the stated %.2f%%", 100*rms, 100*crdt.HLLStdError)
	}
}

// FuzzChunkFromState feeds arbitrary bytes through the PN-Counter decoder
// and ChunkFromState: neither may panic, every rejection wraps ErrBadHLL, and
// an accepted state must be exactly the state of the registers it gave.
func FuzzChunkFromState(f *testing.F) {
	var regs [crdt.HLLChunkRegisters]uint8
	f.Add(mustMarshal(f, crdt.ChunkState(&regs)))
	regs[0], regs[17], regs[255] = 1, 3, crdt.HLLMaxRho
	f.Add(mustMarshal(f, crdt.ChunkState(&regs)))
	var counter crdt.PNCounter
	counter.Increment(1, 5, 1_700_000_000_000)
	counter.Decrement(2, 1, 1_700_000_000_000)
	f.Add(mustMarshal(f, counter))
	f.Add(mustMarshal(f, crdt.PNCounter{P: crdt.NewGCounter(crdt.Slot{Replica: 256, Count: 1})}))
	f.Add(mustMarshal(f, crdt.PNCounter{P: crdt.NewGCounter(crdt.Slot{Replica: 1, Count: 52})}))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		var st crdt.PNCounter
		if err := st.UnmarshalBinary(data); err != nil {
			return
		}
		var dst [crdt.HLLChunkRegisters]uint8
		if err := crdt.ChunkFromState(st, &dst); err != nil {
			if !errors.Is(err, crdt.ErrBadHLL) {
				t.Fatalf("error %q does not wrap ErrBadHLL", err)
			}
			return
		}
		for i, r := range dst {
			if r > crdt.HLLMaxRho {
				t.Fatalf("register %d = %d accepted", i, r)
			}
		}
		if back := crdt.ChunkState(&dst); !back.Equal(st) {
			t.Fatalf("accepted state %v is not the state %v of its registers", st, back)
		}
	})
}

// Two regions see overlapping audiences. Each keeps a sketch; merging their
// chunk states (as replication does, key by key) gives the sketch of the
// union, so the overlap is not counted twice.
func ExampleEstimateHLL() {
	var eu, us [crdt.HLLRegisters]uint8
	insert := func(regs *[crdt.HLLRegisters]uint8, user string) {
		chunk, offset, rho := crdt.HLLPosition(user)
		i := chunk*crdt.HLLChunkRegisters + offset
		regs[i] = max(regs[i], rho)
	}
	for i := range 3000 {
		insert(&eu, "user-"+strconv.Itoa(i)) // users 0..2999 watch in the EU
	}
	for i := 2000; i < 5000; i++ {
		insert(&us, "user-"+strconv.Itoa(i)) // users 2000..4999 in the US
	}

	var merged [crdt.HLLRegisters]uint8
	for c := range crdt.HLLChunks {
		lo, hi := c*crdt.HLLChunkRegisters, (c+1)*crdt.HLLChunkRegisters
		st := crdt.ChunkState((*[crdt.HLLChunkRegisters]uint8)(eu[lo:hi]))
		st.Merge(crdt.ChunkState((*[crdt.HLLChunkRegisters]uint8)(us[lo:hi])))
		if err := crdt.ChunkFromState(st, (*[crdt.HLLChunkRegisters]uint8)(merged[lo:hi])); err != nil {
			panic(err)
		}
	}
	fmt.Println(crdt.EstimateHLL(&eu), crdt.EstimateHLL(&us), crdt.EstimateHLL(&merged))
	// Output:
	// 3030 2984 5000
}

func BenchmarkHLLPosition(b *testing.B) {
	users := make([]string, 1024)
	for i := range users {
		users[i] = fmt.Sprintf("user-%08d", i)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		crdt.HLLPosition(users[i%len(users)])
	}
}

func BenchmarkEstimateHLL(b *testing.B) {
	var regs [crdt.HLLRegisters]uint8
	for i := range 1_000_000 {
		insertHLL(&regs, "user-"+strconv.Itoa(i))
	}
	b.ReportAllocs()
	for b.Loop() {
		crdt.EstimateHLL(&regs)
	}
}
