package crdt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"

	"github.com/axiomhq/hyperloglog"
	metro "github.com/dgryski/go-metro"
)

// Unique viewers of a video are counted with a HyperLogLog sketch laid out
// exactly as github.com/axiomhq/hyperloglog lays out a dense precision-14
// sketch (8-bit registers, MetroHash64 with seed 1337), so that the library's
// LogLog-Beta estimator can read it. A sketch replicates as HLLChunks keys of
// HLLChunkRegisters registers each: a new viewer changes one small key, not a
// 16 KiB one. A chunk travels and is stored as a PNCounter whose P slots are
// its nonzero registers (Replica = register offset in the chunk, Count =
// register value, Updated = 0) and whose N is empty. PNCounter.Merge, the
// slot-wise max, is then the register-wise max of HyperLogLog merge, so the
// sketch is a CRDT that rides on the same replication as the counters.

// Shape of the unique-viewer sketch.
const (
	// HLLPrecision is p: the top p bits of a user's hash pick its register.
	HLLPrecision = 14
	// HLLRegisters is the number of registers of a sketch, 2^HLLPrecision.
	HLLRegisters = 1 << HLLPrecision
	// HLLChunks is the number of keys a sketch replicates as.
	HLLChunks = 64
	// HLLChunkRegisters is the number of registers in one chunk.
	HLLChunkRegisters = HLLRegisters / HLLChunks
	// HLLMaxRho is the largest value a register can hold: one more than the
	// number of hash bits left after the register index.
	HLLMaxRho = 64 - HLLPrecision + 1
	// HLLStdError is the relative standard error of an estimate,
	// 1.04/sqrt(HLLRegisters) ≈ 0.81%: about two in three estimates are within
	// it of the true count and nearly all within three times it.
	HLLStdError = 0.0081
)

// hllSeed is the MetroHash64 seed axiomhq/hyperloglog hashes elements with
// (pinned by version 2 of its binary format).
const hllSeed = 1337

// ErrBadHLL is wrapped by errors about a key or state that is not a chunk of a
// unique-viewer sketch.
var ErrBadHLL = errors.New("crdt: not a hyperloglog chunk")

// uniquePrefix starts the Event part of a sketch chunk's Key. Event types are
// validated to [A-Za-z0-9_.:-], claims start with '!' and time buckets with
// '#', so no other key starts with it.
const (
	uniquePrefix = '~'
	uniqueEvent  = "~uv/"
)

// uniqueEvents holds the Event of every chunk, so UniqueKey never allocates.
var uniqueEvents = func() (ev [HLLChunks]string) {
	for i := range ev {
		ev[i] = uniqueEvent + strconv.Itoa(i)
	}
	return ev
}()

// UniqueKey names chunk (0 ≤ chunk < HLLChunks) of video's unique-viewer
// sketch: Event is "~uv/" followed by the chunk in decimal. It panics on a
// chunk out of range, which only a programming error can produce.
func UniqueKey(video string, chunk int) Key {
	if chunk < 0 || chunk >= HLLChunks {
		panic(fmt.Sprintf("crdt: hyperloglog chunk %d out of range [0, %d)", chunk, HLLChunks))
	}
	return Key{Video: video, Event: uniqueEvents[chunk]}
}

// IsUnique reports whether k is in the key space of unique-viewer sketches
// (its Event starts with '~'). It does not check that k is well formed; see
// ParseUniqueKey.
func (k Key) IsUnique() bool { return len(k.Event) > 0 && k.Event[0] == uniquePrefix }

// ParseUniqueKey is the inverse of UniqueKey. ok is false unless k is exactly
// a key UniqueKey makes: the chunk must be in canonical decimal (no sign, no
// leading zero) and below HLLChunks.
func ParseUniqueKey(k Key) (video string, chunk int, ok bool) {
	d, found := strings.CutPrefix(k.Event, uniqueEvent)
	if !found || len(d) == 0 || len(d) > 2 || (d[0] == '0' && len(d) > 1) {
		return "", 0, false
	}
	for i := 0; i < len(d); i++ {
		if d[i] < '0' || d[i] > '9' {
			return "", 0, false
		}
		chunk = chunk*10 + int(d[i]-'0')
	}
	if chunk >= HLLChunks {
		return "", 0, false
	}
	return k.Video, chunk, true
}

// HLLPosition is where user lands in a sketch, computed as axiomhq's
// Sketch.Insert does for a dense precision-14 sketch: the register index is
// the top HLLPrecision bits of MetroHash64(user, 1337), split into its chunk
// (index / HLLChunkRegisters) and offset in the chunk (index %
// HLLChunkRegisters); rho, in [1, HLLMaxRho], is one more than the number of
// leading zeros of the remaining bits. Inserting user sets the register to
// max(register, rho).
func HLLPosition(user string) (chunk int, offset int, rho uint8) {
	x := metro.Hash64Str(user, hllSeed)
	index := int(x >> (64 - HLLPrecision))
	// The sentinel bit caps the leading-zero count at 64-HLLPrecision.
	w := x<<HLLPrecision | 1<<(HLLPrecision-1)
	rho = uint8(bits.LeadingZeros64(w)) + 1
	return index / HLLChunkRegisters, index % HLLChunkRegisters, rho
}

// ChunkState is the replicated state of one chunk's registers: a P slot
// {Replica: offset, Count: register, Updated: 0} for every nonzero register,
// and an empty N. An all-zero chunk gives the zero PNCounter. The state is
// canonical: equal registers give equal states.
func ChunkState(regs *[HLLChunkRegisters]uint8) PNCounter {
	n := 0
	for _, r := range regs {
		if r != 0 {
			n++
		}
	}
	if n == 0 {
		return PNCounter{}
	}
	slots := make([]Slot, 0, n)
	for off, r := range regs {
		if r != 0 {
			slots = append(slots, Slot{Replica: ReplicaID(off), Count: uint64(r)})
		}
	}
	return PNCounter{P: GCounter{slots: slots}}
}

// AppendChunkState appends to b the canonical encoding of ChunkState(regs),
// the bytes its MarshalBinary returns, without building the state: the
// write path of a chunk needs only the bytes. It grows b at most once.
func AppendChunkState(b []byte, regs *[HLLChunkRegisters]uint8) []byte {
	// A slot is (offset, register, 0). Offsets and registers are bytes,
	// written as msgpack's EncodeUint writes them: one byte (positive fixint)
	// below 0x80, two (uint8) from 0x80. Count the slots, and the values that
	// take two bytes, without a branch on the data.
	// Both passes skip eight zero registers at a time: most chunks of most
	// sketches hold a few registers (a video's chunk is written each time a
	// view raises one of its registers).
	n, wide := 0, 0
	for w := 0; w < HLLChunkRegisters; w += 8 {
		if binary.LittleEndian.Uint64(regs[w:]) == 0 {
			continue
		}
		for off := w; off < w+8; off++ {
			r := regs[off]
			nz := int((r | -r) >> 7) // 1 if r != 0
			n += nz
			wide += int(r>>7) + nz&(off>>7)
		}
	}
	b = grow(b, 1+MsgpackArrayHeaderSize(3*n)+3*n+wide+1)
	b = append(b, mpFixArray|2)
	b = appendArrayLen(b, 3*n)
	i := len(b)
	b = b[:i+3*n+wide]
	for w := 0; w < HLLChunkRegisters; w += 8 {
		if binary.LittleEndian.Uint64(regs[w:]) == 0 {
			continue
		}
		for off := w; off < w+8; off++ {
			r := regs[off]
			if r == 0 {
				continue
			}
			if off > mpPosFixintMax {
				b[i] = mpUint8
				i++
			}
			b[i] = byte(off)
			i++
			if r > mpPosFixintMax {
				b[i] = mpUint8
				i++
			}
			b[i] = r
			b[i+1] = 0 // Updated
			i += 2
		}
	}
	return append(b, mpFixArray) // empty N
}

// A chunk offset must be a byte for AppendChunkState, which also reads a
// chunk eight registers at a time (the second constant overflows unless
// the chunk is a multiple of eight registers long).
const (
	_      = uint8(HLLChunkRegisters - 1)
	_ uint = -(HLLChunkRegisters % 8)
)

// ChunkFromState is the inverse of ChunkState: it sets dst to the registers
// st holds (registers without a slot are zero; dst's previous content is
// overwritten, not merged). It returns an error wrapping ErrBadHLL, and
// leaves dst unchanged, unless st is a chunk state: N empty and every P slot
// with Replica < HLLChunkRegisters, 1 ≤ Count ≤ HLLMaxRho and Updated = 0.
func ChunkFromState(st PNCounter, dst *[HLLChunkRegisters]uint8) error {
	if err := checkChunkState(st); err != nil {
		return err
	}
	*dst = [HLLChunkRegisters]uint8{}
	for _, s := range st.P.slots {
		dst[s.Replica] = uint8(s.Count)
	}
	return nil
}

// checkChunkState returns an error wrapping ErrBadHLL unless st is a state
// ChunkState can produce.
func checkChunkState(st PNCounter) error {
	if n := st.N.Len(); n != 0 {
		return fmt.Errorf("%w: %d N slots, want none", ErrBadHLL, n)
	}
	for i, s := range st.P.slots {
		switch {
		case s.Replica >= HLLChunkRegisters:
			return fmt.Errorf("%w: slot %d: register offset %d, want < %d", ErrBadHLL, i, uint64(s.Replica), HLLChunkRegisters)
		case s.Count < 1 || s.Count > HLLMaxRho:
			return fmt.Errorf("%w: slot %d: register %d = %d, want 1..%d", ErrBadHLL, i, uint64(s.Replica), s.Count, HLLMaxRho)
		case s.Updated != 0:
			return fmt.Errorf("%w: slot %d: register %d has time %d, want 0", ErrBadHLL, i, uint64(s.Replica), s.Updated)
		}
	}
	return nil
}

// hllDenseHeader is the start of axiomhq's version-2 dense encoding: version
// 2, precision, bias 0 (required by version 2), dense; then the big-endian
// register count.
var hllDenseHeader = [8]byte{2, HLLPrecision, 0, 0, HLLRegisters >> 24 & 0xff, HLLRegisters >> 16 & 0xff, HLLRegisters >> 8 & 0xff, HLLRegisters & 0xff}

// EstimateHLL is the estimated number of distinct users inserted into the
// sketch regs (HLLRegisters registers, chunk c at [c·HLLChunkRegisters,
// (c+1)·HLLChunkRegisters)), computed by axiomhq/hyperloglog's LogLog-Beta
// estimator. It is a pure function of the registers, so replicas holding
// equal registers show equal estimates. A register above HLLMaxRho, which
// neither HLLPosition nor ChunkFromState can produce, counts as HLLMaxRho.
// It costs one 16 KiB allocation and, in the library's estimator, a
// math.Pow per nonzero register: about 70 µs for a sketch of 100 users and
// 600 µs for a full one, so callers on a read path cache it.
func EstimateHLL(regs *[HLLRegisters]uint8) uint64 {
	buf := make([]byte, len(hllDenseHeader)+HLLRegisters)
	copy(buf, hllDenseHeader[:])
	for i, r := range regs {
		buf[len(hllDenseHeader)+i] = min(r, HLLMaxRho)
	}
	var sk hyperloglog.Sketch
	if err := sk.UnmarshalBinary(buf); err != nil {
		// The payload is well formed by construction; only a change of the
		// library's format could get here, and tests would catch it.
		panic(fmt.Sprintf("crdt: axiomhq/hyperloglog rejected a dense sketch: %v", err))
	}
	return sk.Estimate()
}
