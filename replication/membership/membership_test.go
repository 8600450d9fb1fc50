package membership

import (
	"io"
	"log"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

var key = []byte("0123456789abcdef0123456789abcdef")

type recorder struct {
	mu   sync.Mutex
	last []Member
}

func (r *recorder) set(m []Member) { r.mu.Lock(); r.last = m; r.mu.Unlock() }
func (r *recorder) get() []Member  { r.mu.Lock(); defer r.mu.Unlock(); return r.last }

func start(t *testing.T, name, region string, key []byte) (*Membership, *recorder) {
	t.Helper()
	rec := &recorder{}
	m, err := Start(Config{
		NodeName: name, BindAddr: "127.0.0.1:0", Region: region,
		ReplAddr: "127.0.0.1:7001", HTTPAddr: "127.0.0.1:8001", GossipKey: key,
	}, rec.set)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Leave() })
	return m, rec
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func aliveCount(ms []Member) int {
	n := 0
	for _, m := range ms {
		if m.Status == StatusAlive {
			n++
		}
	}
	return n
}

func TestMembersSeeEachOtherAndIgnorePlainAgents(t *testing.T) {
	a, recA := start(t, "a", "us", key)
	b, recB := start(t, "b", "eu", key)
	if _, err := b.Join([]string{a.GossipAddr()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "both members alive on both sides", func() bool {
		return aliveCount(recA.get()) == 2 && aliveCount(recB.get()) == 2
	})
	got := a.Members()
	if got[0].Name != "a" || got[0].Region != "us" || got[1].Region != "eu" || got[1].ReplAddr != "127.0.0.1:7001" {
		t.Fatalf("members %+v", got)
	}

	// A plain Serf agent (no tally tags) with the right key joins the pool.
	ml := memberlist.DefaultLocalConfig()
	ml.BindAddr, ml.BindPort = "127.0.0.1", 0
	kr, _ := memberlist.NewKeyring(nil, key)
	ml.Keyring = kr
	ml.Logger = log.New(io.Discard, "", 0)
	sc := serf.DefaultConfig()
	sc.NodeName, sc.MemberlistConfig, sc.Logger = "plain-agent", ml, log.New(io.Discard, "", 0)
	plain, err := serf.Create(sc)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Shutdown()
	if _, err := plain.Join([]string{a.GossipAddr()}, true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "serf sees the plain agent", func() bool { return a.serf.NumNodes() == 3 })
	a.refresh()
	if n := len(a.Members()); n != 2 {
		t.Fatalf("plain agent reported as a tally member: %+v", a.Members())
	}

	// b leaves: a sees it as left.
	b.Leave()
	eventually(t, "b seen as left", func() bool { return aliveCount(recA.get()) == 1 })
}

func TestWrongGossipKeyCannotJoin(t *testing.T) {
	a, _ := start(t, "a", "us", key)
	c, _ := start(t, "c", "ap", []byte("ffffffffffffffffffffffffffffffff"))
	if _, err := c.Join([]string{a.GossipAddr()}); err == nil {
		t.Fatal("join with the wrong gossip key succeeded")
	}
	if n := aliveCount(a.Members()); n != 1 {
		t.Fatalf("a node with the wrong key joined: %+v", a.Members())
	}
}

func TestTagsOverSerfLimitRefused(t *testing.T) {
	long := make([]byte, 600)
	for i := range long {
		long[i] = 'x'
	}
	if _, err := Start(Config{NodeName: "x", BindAddr: "127.0.0.1:0", Region: string(long), ReplAddr: "127.0.0.1:1"}, nil); err == nil {
		t.Fatal("oversized tags accepted")
	}
}
