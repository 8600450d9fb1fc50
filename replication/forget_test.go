package replication

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tallyhq/tally/crdt"
)

// forgetAll drops the expired keys from every node, its engine and the truth,
// as region does when a dedup window ends.
func (c *cluster) forgetAll(expired func(crdt.Key) bool) int {
	c.expired = expired
	removed := 0
	for _, nd := range c.nodes {
		for k := range nd.states {
			if expired(k) {
				delete(nd.states, k)
			}
		}
		removed += nd.eng.Forget(c.now, expired)
	}
	for k := range c.truth {
		if expired(k) {
			delete(c.truth, k)
		}
	}
	return removed
}

// TestForget: keys forgotten everywhere, some of them while a repair after a
// partition is still paging them, leave the digests equal and the rest of
// the state converging; live keys keep replicating afterwards.
func TestForget(t *testing.T) {
	for seed := range uint64(6) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			cfg := testConfig()
			cfg.LogCapacity = 64
			c := newCluster(t, seed, 3, cfg, lossyNet())
			claim := func(i int) crdt.Key {
				return crdt.Key{Video: fmt.Sprintf("v%03d", i%7), Event: fmt.Sprintf("!u%d@%d", i, i%2)}
			}
			for i := range 200 {
				c.incr(i%3, claim(i), 1)
				c.incr(i%3, key(i%30), 1)
				c.advance(step)
			}
			c.settleWhen(step, time.Minute, c.converged)

			// A partition, more changes, and the heal: forget window 0 while
			// repair and deltas are under way.
			c.partition(0, 1)
			c.partition(0, 2)
			for i := 200; i < 600; i++ {
				c.incr(i%3, claim(i), 1)
				c.incr(i%3, key(i%30), 1)
			}
			c.run(time.Second)
			c.heal()
			c.advance(step)
			c.advance(step)
			window0 := func(k crdt.Key) bool { return strings.HasSuffix(k.Event, "@0") }
			if n := c.forgetAll(window0); n == 0 {
				t.Fatal("nothing forgotten")
			}
			for i := 600; i < 700; i++ {
				c.incr(i%3, claim(i|1), 1) // window 1 only
			}
			c.settleWhen(step, 2*time.Minute, c.converged)
			for _, nd := range c.nodes {
				st := nd.eng.Status(c.now)
				if st.Keys != len(nd.states) {
					t.Errorf("%s: engine has %d keys, node %d", nd.id, st.Keys, len(nd.states))
				}
				for k := range nd.states {
					if window0(k) {
						t.Errorf("%s: forgotten key %s is back", nd.id, k)
					}
				}
			}
			sums := c.nodes[0].eng.sums
			for _, nd := range c.nodes[1:] {
				for i := range sums {
					if nd.eng.sums[i] != sums[i] {
						t.Fatalf("%s: digest bucket %d differs after convergence", nd.id, i)
					}
				}
			}
		})
	}
}
