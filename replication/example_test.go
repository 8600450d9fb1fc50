package replication_test

import (
	"fmt"
	"time"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/replication"
)

// store is a node's durable state (here: a map, durable at once).
type store map[crdt.Key]crdt.PNCounter

func (s store) State(k crdt.Key) crdt.PNCounter { return s[k].Clone() }

// Two nodes replicate a counter. The caller owns the clock and the network:
// it ticks the engines, carries their messages (through the wire codec), and
// merges what they hand over, reporting changes back with Changed.
func ExampleEngine() {
	now := time.Unix(1_700_000_000, 0)
	stores := map[replication.NodeID]store{"a": {}, "b": {}}
	engines := map[replication.NodeID]*replication.Engine{}
	for i, id := range []replication.NodeID{"a", "b"} {
		cfg := replication.DefaultConfig(id)
		cfg.Epoch = uint64(now.UnixNano()) + uint64(i) // increases across restarts
		e, err := replication.New(cfg, stores[id])
		if err != nil {
			panic(err)
		}
		engines[id] = e
	}
	engines["a"].AddPeer(now, "b")
	engines["b"].AddPeer(now, "a")

	// A view counted at a, by replica 1.
	k := crdt.Key{Video: "v1", Event: "view"}
	st := stores["a"][k]
	st.Increment(1, 1, now.UnixMilli())
	stores["a"][k] = st
	engines["a"].Changed(now, k)

	var queue []replication.Message
	handle := func(id replication.NodeID, r replication.Ready) {
		for _, ap := range r.Apply {
			for _, e := range ap.Entries {
				st := stores[id][e.Key].Clone()
				if st.Merge(e.State) {
					stores[id][e.Key] = st // durable here; then report it
					engines[id].Changed(now, e.Key)
				}
			}
			if ap.Ack != nil {
				queue = append(queue, *ap.Ack) // after the merge is durable
			}
		}
		queue = append(queue, r.Messages...)
	}
	for range 3 {
		now = now.Add(100 * time.Millisecond)
		handle("a", engines["a"].Tick(now))
		handle("b", engines["b"].Tick(now))
		for len(queue) > 0 {
			raw, err := replication.EncodeMessage(queue[0])
			queue = queue[1:]
			if err != nil {
				panic(err)
			}
			m, err := replication.DecodeMessage(raw)
			if err != nil {
				panic(err)
			}
			r, err := engines[m.To].Step(now, m)
			if err != nil {
				panic(err)
			}
			handle(m.To, r)
		}
	}
	fmt.Println("b counts", stores["b"][k].Value())
	st0 := engines["a"].Status(now).Peers[0]
	fmt.Printf("a → %s: cursor %d of %d\n", st0.Peer, st0.Cursor, engines["a"].Status(now).Head)
	// Output:
	// b counts 1
	// a → b: cursor 1 of 1
}
