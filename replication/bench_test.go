package replication

import (
	"fmt"
	"testing"
	"time"

	"github.com/tallyhq/tally/crdt"
)

func benchKey(i int) crdt.Key {
	return crdt.Key{Video: fmt.Sprintf("video-%09d", i), Event: "view"}
}

func benchState(r crdt.ReplicaID, n uint64) crdt.PNCounter {
	return crdt.PNCounter{P: crdt.NewGCounter(crdt.Slot{Replica: r, Count: n, Updated: 1_700_000_000_000 + int64(n)})}
}

// BenchmarkChanged: recording one durable change (hash of the canonical
// encoding, digest update, change-log append) in an engine of 100k keys.
func BenchmarkChanged(b *testing.B) {
	const keys = 100_000
	src := mapSource{}
	ks := make([]crdt.Key, keys)
	for i := range ks {
		ks[i] = benchKey(i)
		src[ks[i]] = benchState(1, 1)
	}
	e := mustEngine(b, "a", 1, src)
	for _, k := range ks {
		e.Changed(simStart, k)
	}
	// Two states per key, alternated so that every call sees a change.
	alt := [2]crdt.PNCounter{benchState(1, 2), benchState(1, 3)}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		k := ks[i%keys]
		src[k] = alt[(i/keys)%2]
		e.Changed(simStart, k)
	}
}

// BenchmarkTickShip: shipping n changed keys to one caught-up peer: Tick
// builds deltas (MaxInflight at a time), each is encoded as the transport
// would, and acknowledged at once. Reports ns per key shipped and bytes.
func BenchmarkTickShip(b *testing.B) {
	for _, n := range []int{10_000, 1_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			if n > 100_000 && testing.Short() {
				b.Skip("1M keys in -short")
			}
			src := mapSource{}
			e := mustEngine(b, "a", 1, src)
			e.AddPeer(simStart, "b")
			p := e.peers["b"]
			p.repairDue, p.nextRepair = false, simStart.Add(time.Hour) // deltas only
			for i := range n {
				k := benchKey(i)
				src[k] = benchState(1, uint64(i))
				e.Changed(simStart, k)
			}
			var bytes, msgs int
			b.ResetTimer()
			for range b.N {
				p.cursor, p.inflight = 0, nil // ship it all again
				now := simStart
				for p.cursor < e.head {
					now = now.Add(e.cfg.SyncInterval)
					queue := e.Tick(now).Messages
					for len(queue) > 0 {
						m := queue[0]
						queue = queue[1:]
						raw, err := EncodeMessage(m)
						if err != nil {
							b.Fatal(err)
						}
						bytes += len(raw)
						msgs++
						if m.Kind != KindDelta || m.ToSeq == m.FromSeq {
							continue
						}
						r, err := e.Step(now, Message{Kind: KindAck, From: "b", To: "a", FromEpoch: 2, ToEpoch: 1, FromSeq: m.FromSeq, ToSeq: m.ToSeq})
						if err != nil {
							b.Fatal(err)
						}
						queue = append(queue, r.Messages...)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/key")
			b.ReportMetric(float64(bytes)/float64(b.N), "bytes/op")
			b.ReportMetric(float64(msgs)/float64(b.N), "msgs/op")
		})
	}
}

// pair runs two engines in process over a perfect network, every message
// through the wire codec.
type pair struct {
	now         time.Time
	nodes       [2]*simNode
	queue       []Message
	bytes, msgs int
	entries     map[Kind]int // entries shipped, by message kind
}

func newPair(b *testing.B, n int) *pair {
	pr := &pair{now: simStart, entries: map[Kind]int{}}
	for i, id := range []NodeID{"a", "b"} {
		nd := &simNode{id: id, states: make(map[crdt.Key]crdt.PNCounter, n)}
		for k := range n {
			nd.states[benchKey(k)] = benchState(crdt.ReplicaID(i+1), uint64(k+1))
		}
		cfg := DefaultConfig(id)
		cfg.Epoch = uint64(i + 1)
		e, err := New(cfg, nd)
		if err != nil {
			b.Fatal(err)
		}
		for k := range n {
			e.Load(benchKey(k))
		}
		nd.eng = e
		pr.nodes[i] = nd
	}
	return pr
}

func (pr *pair) handle(b *testing.B, nd *simNode, r Ready) {
	for _, a := range r.Apply {
		for _, e := range a.Entries {
			st := nd.states[e.Key].Clone()
			if st.Merge(e.State) {
				nd.states[e.Key] = st
				if st.Equal(e.State) {
					nd.eng.ChangedFrom(pr.now, e.Key, a.From, a.FromEpoch)
				} else {
					nd.eng.Changed(pr.now, e.Key)
				}
			}
		}
		if a.Ack != nil {
			pr.queue = append(pr.queue, *a.Ack)
		}
	}
	pr.queue = append(pr.queue, r.Messages...)
}

// round ticks both engines and delivers until nothing is in flight.
func (pr *pair) round(b *testing.B) {
	pr.now = pr.now.Add(100 * time.Millisecond)
	for _, nd := range pr.nodes {
		pr.handle(b, nd, nd.eng.Tick(pr.now))
	}
	for len(pr.queue) > 0 {
		m := pr.queue[0]
		pr.queue = pr.queue[1:]
		raw, err := EncodeMessage(m)
		if err != nil {
			b.Fatal(err)
		}
		pr.bytes += len(raw)
		pr.msgs++
		pr.entries[m.Kind] += len(m.Entries)
		d, err := DecodeMessage(raw)
		if err != nil {
			b.Fatal(err)
		}
		dst := pr.nodes[0]
		if d.To == "b" {
			dst = pr.nodes[1]
		}
		r, err := dst.eng.Step(pr.now, d)
		if err != nil {
			b.Fatal(err)
		}
		pr.handle(b, dst, r)
	}
}

func (pr *pair) repaired() bool {
	for _, nd := range pr.nodes {
		for _, p := range nd.eng.Status(pr.now).Peers {
			if p.Repairing || p.Serving {
				return false
			}
		}
	}
	return pr.nodes[0].eng.sumsEqual(pr.nodes[1].eng)
}

func (pr *pair) quiet() bool {
	for _, nd := range pr.nodes {
		for _, p := range nd.eng.Status(pr.now).Peers {
			if p.Repairing || p.Serving || p.Behind != 0 {
				return false
			}
		}
	}
	return true
}

func (e *Engine) sumsEqual(o *Engine) bool {
	for i, s := range e.sums {
		if o.sums[i] != s {
			return false
		}
	}
	return true
}

// BenchmarkRepair: two engines holding n keys each, every state different
// (each side has only its own replica's slot), meet (AddPeer on both sides)
// and repair by digest, every message through the codec. Reports the time
// and traffic until both are quiet (digests equal, every cursor at its head),
// and the entries shipped per key in repair pages and in deltas.
func BenchmarkRepair(b *testing.B) {
	for _, n := range []int{10_000, 1_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			if n > 100_000 && testing.Short() {
				b.Skip("1M keys in -short")
			}
			var sec float64
			var bytes, msgs, repairEntries, deltaEntries int
			for range b.N {
				b.StopTimer()
				pr := newPair(b, n)
				b.StartTimer()
				start := time.Now()
				pr.nodes[0].eng.AddPeer(pr.now, "b")
				pr.nodes[1].eng.AddPeer(pr.now, "a")
				for !pr.repaired() || !pr.quiet() {
					pr.round(b)
				}
				sec += time.Since(start).Seconds()
				bytes += pr.bytes
				msgs += pr.msgs
				repairEntries += pr.entries[KindRepairData]
				deltaEntries += pr.entries[KindDelta]
				b.StopTimer()
				for k, st := range pr.nodes[0].states {
					if !st.Equal(pr.nodes[1].states[k]) || st.P.Len() != 2 {
						b.Fatalf("%s not converged: %v vs %v", k, st, pr.nodes[1].states[k])
					}
				}
				b.StartTimer()
			}
			f := float64(b.N)
			b.ReportMetric(sec/f, "s")
			b.ReportMetric(float64(bytes)/f/(1<<20), "MiB")
			b.ReportMetric(float64(msgs)/f, "msgs")
			b.ReportMetric(float64(repairEntries)/f/float64(n), "repair-entries/key")
			b.ReportMetric(float64(deltaEntries)/f/float64(n), "delta-entries/key")
		})
	}
}
