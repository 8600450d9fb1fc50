package membership

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log"
	"os"
	"path/filepath"
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
	// Members is refreshed by Serf's events, on a goroutine of its own: read
	// Serf's list now rather than race the event that lists a itself.
	a.refresh()
	if n := aliveCount(a.Members()); n != 1 || a.serf.NumNodes() != 1 {
		t.Fatalf("a node with the wrong key joined: %+v (Serf knows %d nodes)", a.Members(), a.serf.NumNodes())
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

func startKeyring(t *testing.T, name string, cfg Config) (*Membership, *recorder) {
	t.Helper()
	rec := &recorder{}
	cfg.NodeName, cfg.BindAddr, cfg.Region = name, "127.0.0.1:0", "us"
	cfg.ReplAddr, cfg.HTTPAddr = "127.0.0.1:7001", "127.0.0.1:8001"
	m, err := Start(cfg, rec.set)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Leave() })
	return m, rec
}

// TestKeyRotation rotates the gossip key of a running pool as the README
// says (install, use, remove), checks that gossip goes on throughout, that
// the keyring files follow, that a newcomer with only the new key joins and
// one with only the old key cannot.
func TestKeyRotation(t *testing.T) {
	oldKey := key
	newKey := []byte("fedcba9876543210fedcba9876543210")
	oldB64, newB64 := base64.StdEncoding.EncodeToString(oldKey), base64.StdEncoding.EncodeToString(newKey)
	dir := t.TempDir()
	a, recA := startKeyring(t, "a", Config{GossipKey: oldKey, KeyringFile: filepath.Join(dir, "a.keyring")})
	b, recB := startKeyring(t, "b", Config{GossipKey: oldKey, KeyringFile: filepath.Join(dir, "b.keyring")})
	if _, err := b.Join([]string{a.GossipAddr()}); err != nil {
		t.Fatal(err)
	}
	bothAlive := func() bool { return aliveCount(recA.get()) == 2 && aliveCount(recB.get()) == 2 }
	eventually(t, "both alive", bothAlive)
	if got := readKeyring(t, filepath.Join(dir, "a.keyring")); len(got) != 1 || got[0] != oldB64 {
		t.Fatalf("keyring file at start: %v", got)
	}

	step := func(what string, op func(string) (KeyringStatus, error), k string) {
		t.Helper()
		st, err := op(k)
		if err != nil || st.Errors != 0 || st.Responses != st.Members || st.Members != 2 {
			t.Fatalf("%s: %+v, %v", what, st, err)
		}
		eventually(t, "both alive after "+what, bothAlive)
	}
	step("install", a.InstallKey, newB64)
	step("use", a.UseKey, newB64)
	if st, err := b.RemoveKey(newB64); err != nil || st.Errors != 2 {
		t.Fatalf("removing the primary key: want every member to refuse, got %+v, %v", st, err)
	}
	step("remove", b.RemoveKey, oldB64)

	st, err := a.ListKeys()
	if err != nil || len(st.Keys) != 1 || st.Keys[newB64] != 2 || st.PrimaryKeys[newB64] != 2 {
		t.Fatalf("keys after rotation: %+v, %v", st, err)
	}
	for _, f := range []string{"a.keyring", "b.keyring"} {
		if got := readKeyring(t, filepath.Join(dir, f)); len(got) != 1 || got[0] != newB64 {
			t.Fatalf("%s after rotation: %v", f, got)
		}
	}

	stale, _ := startKeyring(t, "stale", Config{GossipKey: oldKey})
	if _, err := stale.Join([]string{a.GossipAddr()}); err == nil {
		t.Fatal("a member with only the retired key joined")
	}
	// A restart reads the keyring file, not the (now retired) configured key.
	fresh, _ := startKeyring(t, "fresh", Config{GossipKey: oldKey, KeyringFile: filepath.Join(dir, "b.keyring")})
	if _, err := fresh.Join([]string{a.GossipAddr()}); err != nil {
		t.Fatalf("a member restarted on the rotated keyring file: %v", err)
	}
}

func TestKeyringErrors(t *testing.T) {
	clear, _ := start(t, "clear", "us", nil)
	if _, err := clear.InstallKey(base64.StdEncoding.EncodeToString(key)); !errors.Is(err, ErrNoKeyring) {
		t.Fatalf("install on an unencrypted pool: %v", err)
	}
	enc, _ := start(t, "enc", "us", key)
	for _, k := range []string{"", "not base64!", base64.StdEncoding.EncodeToString([]byte("short"))} {
		if _, err := enc.InstallKey(k); !errors.Is(err, ErrInvalidKey) {
			t.Fatalf("install %q: %v", k, err)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.keyring")
	os.WriteFile(bad, []byte(`["x"]`), 0o600)
	if _, err := Start(Config{NodeName: "x", BindAddr: "127.0.0.1:0", Region: "us", ReplAddr: "127.0.0.1:1", KeyringFile: bad}, nil); err == nil {
		t.Fatal("a keyring file with a bad key was accepted")
	}
}

func readKeyring(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := json.Unmarshal(b, &keys); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return keys
}

// TestListReconciledWithoutEvents: a member list that went stale without a
// Serf event (Serf changes some statuses silently) is read again and
// reported within a reconcile tick.
func TestListReconciledWithoutEvents(t *testing.T) {
	a, recA := start(t, "a", "us", key)
	b, _ := start(t, "b", "eu", key)
	if _, err := a.Join([]string{b.GossipAddr()}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a to see b", func() bool { return aliveCount(recA.get()) == 2 })
	// What a silent change in Serf looks like from here: the list a last
	// reported no longer matches Serf, and no event comes.
	a.mu.Lock()
	a.members = a.members[:1]
	a.mu.Unlock()
	recA.set(nil)
	eventually(t, "the list reported again", func() bool { return aliveCount(recA.get()) == 2 })
}
