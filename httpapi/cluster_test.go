package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tallyhq/tally/region"
	"github.com/tallyhq/tally/replication"
)

// memNet carries replication messages between in-process nodes, with cuts
// between regions. Delivery is asynchronous (a goroutine per node), as with
// the real transport: a node sends while holding its replication lock.
type memNet struct {
	mu    sync.Mutex // protects nodes, cut
	nodes map[string]*memEndpoint
	cut   map[[2]string]bool // region pairs, both orders
}

type memEndpoint struct {
	region string
	node   *region.Node
	inbox  chan []byte
}

func newMemNet() *memNet {
	return &memNet{nodes: map[string]*memEndpoint{}, cut: map[[2]string]bool{}}
}

// memTransport is one node's side of a memNet.
type memTransport struct {
	net  *memNet
	from string // region
}

// Send implements region.Transport; addr is the receiving node's name.
func (t memTransport) Send(addr string, payload []byte) error {
	t.net.mu.Lock()
	to, ok := t.net.nodes[addr]
	cut := ok && t.net.cut[[2]string{t.from, to.region}]
	t.net.mu.Unlock()
	if !ok || cut {
		return nil // dropped silently, like a partition
	}
	select {
	case to.inbox <- append([]byte(nil), payload...):
	default: // a full queue drops, the protocol resends
	}
	return nil
}

// partition cuts (or with heal, restores) the links between regions a and b.
func (n *memNet) partition(a, b string, cut bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cut[[2]string{a, b}], n.cut[[2]string{b, a}] = cut, cut
}

// clusterNode is one in-process node of a testCluster, with its API.
type clusterNode struct {
	name, region string
	node         *region.Node
	srv          *Server
	http         *httptest.Server
}

// testCluster is in-process nodes, one per region, replicating over a memNet
// and serving HTTP on loopback.
type testCluster struct {
	t     *testing.T
	net   *memNet
	nodes []*clusterNode
}

// newTestCluster starts one node per region. Each node knows every other as
// an alive peer, as membership would report it.
func newTestCluster(t *testing.T, regions ...string) *testCluster {
	t.Helper()
	tc := &testCluster{t: t, net: newMemNet()}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	for _, r := range regions {
		cfg := region.TestConfig()
		cfg.Region = r
		cfg.UserRate, cfg.UserBurst = 1e6, 1e6
		m := NewMetrics()
		cfg.Observer = m
		node, err := region.Open(cfg)
		if err != nil {
			t.Fatalf("open node %s: %v", r, err)
		}
		t.Cleanup(func() { node.Close() })
		name := r + "-1"
		ec := replication.DefaultConfig(replication.NodeID(name))
		ec.SyncInterval = 20 * time.Millisecond
		if err := node.EnableReplication(region.ReplicationConfig{Self: name, Engine: ec, Transport: memTransport{net: tc.net, from: r}}); err != nil {
			t.Fatalf("enable replication on %s: %v", name, err)
		}
		srv := New(node, Options{Metrics: m, Joining: true, PeerTimeout: 2 * time.Second})
		hs := httptest.NewServer(srv.Handler())
		t.Cleanup(hs.Close)
		cn := &clusterNode{name: name, region: r, node: node, srv: srv, http: hs}
		ep := &memEndpoint{region: r, node: node, inbox: make(chan []byte, 4096)}
		tc.net.mu.Lock()
		tc.net.nodes[name] = ep
		tc.net.mu.Unlock()
		wg.Add(2)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case p := <-ep.inbox:
					node.ReplicationReceive(p) // an unknown sender is refused; it resends
				}
			}
		}()
		go func() {
			defer wg.Done()
			node.RunReplication(ctx, 10*time.Millisecond)
		}()
		tc.nodes = append(tc.nodes, cn)
	}
	for _, cn := range tc.nodes {
		tc.setPeers(cn, nil)
	}
	return tc
}

// setPeers tells cn that every other node is alive except those in down.
func (tc *testCluster) setPeers(cn *clusterNode, down map[string]bool) {
	var peers []region.Peer
	for _, o := range tc.nodes {
		if o == cn {
			continue
		}
		peers = append(peers, region.Peer{
			Name: o.name, Region: o.region, ReplAddr: o.name,
			HTTPAddr: strings.TrimPrefix(o.http.URL, "http://"), Replica: o.node.Identity().Replica,
			Alive: !down[o.name],
		})
	}
	cn.node.SetPeers(peers)
}

// view posts a view of video by user to cn and requires it counted.
func (tc *testCluster) view(cn *clusterNode, video, user string) {
	tc.t.Helper()
	resp, err := http.Post(cn.http.URL+"/videos/"+video+"/views", "application/json", strings.NewReader(`{"userId":"`+user+`"}`))
	if err != nil {
		tc.t.Fatalf("view on %s: %v", cn.name, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"counted":true`) {
		tc.t.Fatalf("view on %s: %d %s", cn.name, resp.StatusCode, body)
	}
}

// getJSON GETs url and decodes a 200 answer into v.
func getJSON(t testing.TB, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: decode %s: %v", url, body, err)
	}
}

// eventually polls cond every 20ms until it holds or the deadline passes;
// cond describes the state it saw.
func eventually(t testing.TB, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last saw %s", what, within, saw)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dashboardOf reads cn's dashboard for video.
func (tc *testCluster) dashboardOf(cn *clusterNode, video string) dashboardResponse {
	tc.t.Helper()
	var d dashboardResponse
	getJSON(tc.t, cn.http.URL+"/v1/dashboard?video="+video, &d)
	return d
}

// regionSummary renders a dashboard's regions as "us=3 eu=3 ap=?".
func regionSummary(d dashboardResponse) string {
	var parts []string
	for _, r := range d.Regions {
		v := "?"
		if r.ViewCount != nil {
			v = fmt.Sprint(*r.ViewCount)
		}
		parts = append(parts, r.Region+"="+v)
	}
	conv := "null"
	if d.Converged != nil {
		conv = fmt.Sprint(*d.Converged)
	}
	return strings.Join(parts, " ") + " converged=" + conv
}

// regionCount is the count region r shows on d, or -1.
func regionCount(d dashboardResponse, r string) int64 {
	for _, rc := range d.Regions {
		if rc.Region == r && rc.ViewCount != nil {
			return int64(*rc.ViewCount)
		}
	}
	return -1
}
