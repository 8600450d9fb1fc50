package crdt_test

import (
	"testing"

	"github.com/tallyhq/tally/crdt"
)

// benchStates are the shapes the write path encodes most: a counter with a
// slot per region, and a unique-viewer chunk with 200 nonzero registers.
func benchStates() []struct {
	name string
	c    crdt.PNCounter
} {
	var counter crdt.PNCounter
	counter.Increment(0x1f3a_9c2e_0000_0001, 1_234_567, epochMs)
	counter.Increment(0x5b70_11d4_0000_0002, 98_765, epochMs+17)
	counter.Increment(0xc4e2_7a90_0000_0003, 4_321, epochMs+260)

	var regs [crdt.HLLChunkRegisters]uint8
	for i := range 200 {
		regs[i*37%crdt.HLLChunkRegisters] = uint8(i%6 + 1)
	}
	return []struct {
		name string
		c    crdt.PNCounter
	}{
		{"3slots", counter},
		{"chunk200", crdt.ChunkState(&regs)},
	}
}

// BenchmarkPNCounterAppendBinary compares the encoder with the msgpack path
// it replaced, into a fresh slice (MarshalBinary, as the store's mutations
// are built) and into a reused buffer (as replication frames are):
//
//	go test -run=NONE -bench=PNCounterAppendBinary -benchmem ./crdt/
func BenchmarkPNCounterAppendBinary(b *testing.B) {
	for _, st := range benchStates() {
		c := st.c
		b.Run(st.name+"/marshal", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.AppendBinary(nil); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(st.name+"/marshal-msgpack", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := refAppendPNCounter(c, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(st.name+"/reuse", func(b *testing.B) {
			buf := make([]byte, 0, 4096)
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if buf, err = c.AppendBinary(buf[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(st.name+"/reuse-msgpack", func(b *testing.B) {
			buf := make([]byte, 0, 4096)
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if buf, err = refAppendPNCounter(c, buf[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	var regs [crdt.HLLChunkRegisters]uint8
	for i := range 200 {
		regs[i*37%crdt.HLLChunkRegisters] = uint8(i%6 + 1)
	}
	b.Run("chunk200/AppendChunkState", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = crdt.AppendChunkState(nil, &regs)
		}
	})
	var sparse [crdt.HLLChunkRegisters]uint8 // the usual chunk: a few registers
	sparse[17], sparse[200] = 3, 1
	b.Run("chunk2/AppendChunkState", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = crdt.AppendChunkState(nil, &sparse)
		}
	})
	b.Run("chunk200/ChunkState-marshal-msgpack", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := refAppendPNCounter(crdt.ChunkState(&regs), nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkPNCounterUnmarshalBinary compares the decoder with the msgpack
// path it replaced:
//
//	go test -run=NONE -bench=PNCounterUnmarshalBinary -benchmem ./crdt/
func BenchmarkPNCounterUnmarshalBinary(b *testing.B) {
	for _, st := range benchStates() {
		enc := mustMarshal(b, st.c)
		b.Run(st.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(enc)))
			for b.Loop() {
				var c crdt.PNCounter
				if err := c.UnmarshalBinary(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(st.name+"/msgpack", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(enc)))
			for b.Loop() {
				if _, err := refUnmarshalPNCounter(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
