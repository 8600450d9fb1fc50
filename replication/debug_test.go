package replication

import (
	"strings"
	"testing"
	"time"

	"github.com/tallyhq/tally/crdt"
)

func TestDebugRepro(t *testing.T) {
	cfg := testConfig()
	cfg.LogCapacity = 4
	cfg.MaxBatchKeys = 8
	c := newCluster(t, 7, 2, cfg, netConfig{minDelay: 5 * time.Millisecond, maxDelay: 50 * time.Millisecond})
	c.settle(step, time.Minute)
	c.partition(0, 1)
	for i := 1; i <= 8; i++ {
		c.incr(0, crdt.Key{Video: "v" + string(rune('0'+i)), Event: "view"}, 1)
	}
	c.trace = new(strings.Builder)
	c.heal()
	c.settle(step, time.Minute)
	for _, l := range strings.Split(c.trace.String(), "\n") {
		if !strings.Contains(l, "heartbeat") && !strings.Contains(l, "(0,0]") && !strings.Contains(l, "(8,8]") {
			t.Log(l)
		}
	}
}
