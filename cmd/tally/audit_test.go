package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/httpapi"
	"github.com/tallyhq/tally/region"
	"github.com/tallyhq/tally/store"
)

func auditLineOf(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

func auditEnd(n int64) httpapi.AuditEnd {
	var e httpapi.AuditEnd
	e.End.Events, e.End.Node, e.End.DedupWindowMs = n, "n1", 86_400_000
	return e
}

func TestDecodeAuditStream(t *testing.T) {
	ev := httpapi.AuditEvent{Video: "v", Event: "view", User: "u", IngestMs: 5, Replica: "00000000000000ff", Fate: "counted"}
	good := auditLineOf(t, ev) + auditLineOf(t, ev) + auditLineOf(t, auditEnd(2))
	var got []store.Event
	end, err := decodeAuditStream(strings.NewReader(good), func(e store.Event) error { got = append(got, e); return nil })
	if err != nil || len(got) != 2 || end.End.Events != 2 {
		t.Fatalf("good stream: %v, %d events, end %+v", err, len(got), end)
	}
	if want := (store.Event{Video: "v", Event: "view", User: "u", IngestMs: 5, Replica: 0xff, Fate: store.FateCounted}); got[0] != want {
		t.Fatalf("event %+v, want %+v", got[0], want)
	}
	bad := ev
	bad.Fate = "vanished"
	for _, tc := range []struct{ name, stream, want string }{
		{"no closing line", auditLineOf(t, ev), "incomplete"},
		{"empty", "", "incomplete"},
		{"count mismatch", auditLineOf(t, ev) + auditLineOf(t, auditEnd(2)), "closing line counts 2"},
		{"after the end", auditLineOf(t, auditEnd(0)) + auditLineOf(t, ev), "after the closing line"},
		{"error line", auditLineOf(t, ev) + `{"error":{"code":"unavailable","message":"disk"}}` + "\n", "failed mid-stream"},
		{"unknown fate", auditLineOf(t, bad), "unknown fate"},
		{"bad replica", strings.Replace(auditLineOf(t, ev), "00000000000000ff", "zz", 1), "replica"},
		{"not JSON", "{\n", "line 1"},
		{"line too long", `{"videoId":"` + strings.Repeat("a", maxAuditLine) + `"}` + "\n", "too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeAuditStream(strings.NewReader(tc.stream), func(store.Event) error { return nil })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// FuzzDecodeAuditStream feeds arbitrary bytes to the decoder of a node's
// audit stream (tally audit reads it from the network): it must not panic,
// must bound its lines, and must hand over only well-formed events, as many
// as the closing line counts.
func FuzzDecodeAuditStream(f *testing.F) {
	ev := httpapi.AuditEvent{Video: "v", Event: "view", User: "u", IngestMs: 5, Replica: "00000000000000ff", Fate: "counted"}
	evJSON, _ := json.Marshal(ev)
	endJSON, _ := json.Marshal(auditEnd(1))
	f.Add([]byte(string(evJSON) + "\n" + string(endJSON) + "\n"))
	f.Add([]byte(string(endJSON)))
	f.Add([]byte(`{"end":null}`))
	f.Add([]byte(`{"error":{"code":"x","message":"y"}}`))
	f.Add([]byte(`{"videoId":"v","event":"view","userId":"u","ingestMs":1,"replica":"0000000000000001","fate":"compensated"}` + "\n" + `{"end":{"events":1}}`))
	f.Add([]byte("\n\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var n int64
		end, err := decodeAuditStream(bytes.NewReader(b), func(e store.Event) error {
			if e.Video == "" || e.Event == "" || e.IngestMs <= 0 {
				t.Fatalf("ill-formed event handed over: %+v", e)
			}
			if _, ok := fateByName[e.Fate.String()]; !ok {
				t.Fatalf("unknown fate handed over: %d", e.Fate)
			}
			n++
			return nil
		})
		if err == nil && end.End.Events != n {
			t.Fatalf("accepted a stream of %d events closing with %d", n, end.End.Events)
		}
	})
}

func TestAuditUsage(t *testing.T) {
	noEnv := func(string) string { return "" }
	for _, args := range [][]string{
		{},
		{"--endpoints", "127.0.0.1:1"}, // no token
		{"--endpoints", "127.0.0.1:1", "--admin-token", "x", "--video", "bad id"},
		{"--endpoints", "127.0.0.1:1", "--admin-token", "x", "--wait", "-1s"},
		{"--endpoints", "127.0.0.1:1", "--admin-token", "x", "extra"},
		{"--nope"},
	} {
		var out, errOut bytes.Buffer
		if code := runAuditEnv(context.Background(), args, noEnv, &out, &errOut); code != auditUsage {
			t.Errorf("tally audit %q: exit %d, want %d (stderr %s)", args, code, auditUsage, errOut.String())
		}
	}
	var out bytes.Buffer
	if code := runAuditEnv(context.Background(), []string{"--help"}, noEnv, &out, io.Discard); code != 0 || !strings.Contains(out.String(), "--endpoints") {
		t.Errorf("--help: exit %d\n%s", code, out.String())
	}
	// An endpoint that does not answer: the audit is incomplete.
	var errOut bytes.Buffer
	if code := runAuditEnv(context.Background(), []string{"--endpoints", "http://127.0.0.1:1", "--timeout", "2s"}, func(k string) string {
		if k == "TALLY_ADMIN_TOKEN" {
			return "token-from-env"
		}
		return ""
	}, io.Discard, &errOut); code != auditIncomplete {
		t.Errorf("unreachable endpoint: exit %d, want %d (%s)", code, auditIncomplete, errOut.String())
	}
}

// TestAuditOneNodeInProcess audits a single node served in process (no
// cluster): every fate, a recomputation that matches, and a node whose
// counter disagrees with its log.
func TestAuditOneNodeInProcess(t *testing.T) {
	cfg := region.TestConfig()
	cfg.UserRate, cfg.UserBurst = 1, 2
	node, err := region.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	srv := httptest.NewServer(httpapi.New(node, httpapi.Options{AdminToken: "in-process-token-1", NodeName: "solo"}).Handler())
	defer srv.Close()
	post := func(video, user string) {
		resp, err := http.Post(srv.URL+"/videos/"+video+"/views", "application/json", strings.NewReader(`{"userId":"`+user+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	// u's burst of 2: counted, duplicate, then rate limited twice; w: counted.
	for _, v := range []string{"p1", "p1", "p1", "p2"} {
		post(v, "u")
	}
	post("p3", "w")
	var out bytes.Buffer
	ctx := context.Background()
	code := runAuditEnv(ctx, []string{"--endpoints", srv.URL, "--admin-token", "in-process-token-1", "--wait", "0", "-v"}, func(string) string { return "" }, &out, io.Discard)
	if code != auditOK || !strings.Contains(out.String(), "tally audit: no mismatch") || !strings.Contains(out.String(), "ok video p1: expected 1") {
		t.Fatalf("exit %d:\n%s", code, out.String())
	}
	if !strings.Contains(out.String(), "counted 2, duplicate 1, rate_limited 2") {
		t.Errorf("fates not summed per node:\n%s", out.String())
	}
	// A wrong token: the log cannot be read.
	var errOut bytes.Buffer
	if code := runAuditEnv(ctx, []string{"--endpoints", srv.URL, "--admin-token", "wrong-token-123456", "--wait", "0"}, func(string) string { return "" }, io.Discard, &errOut); code != auditIncomplete || !strings.Contains(errOut.String(), "401") {
		t.Fatalf("wrong token: exit %d, %s", code, errOut.String())
	}
	// One video only, never viewed: 0 expected, 0 counted.
	out.Reset()
	if code := runAuditEnv(ctx, []string{"--endpoints", srv.URL, "--admin-token", "in-process-token-1", "--wait", "0", "--video", "never", "-v"}, func(string) string { return "" }, &out, io.Discard); code != auditOK || !strings.Contains(out.String(), "ok video never: expected 0") {
		t.Fatalf("--video never: exit %d\n%s", code, out.String())
	}
}

// TestAuditCluster runs tally audit against a real two-region cluster after
// views that race between the regions (the same user's view of a video sent
// to both at once, so some are counted twice and compensated), repeats, and
// a user over the rate limit: no mismatch. Then it tampers with one node's
// stored counter while the node is stopped, restarts it, and the audit must
// find the mismatch and exit 1.
func TestAuditCluster(t *testing.T) {
	now := time.Now().UTC()
	if next := now.Truncate(24 * time.Hour).Add(24 * time.Hour); next.Sub(now) < 10*time.Minute {
		t.Skipf("less than 10 minutes to UTC midnight (%s); the test would straddle a dedup window", now.Format(time.TimeOnly))
	}
	bin := buildTally(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := launchCluster(t, ctx, clusterSpec{
		Exe: bin, Dir: t.TempDir(), Regions: 2, Nodes: 1,
		Extra: []string{"--user-rate", "1", "--user-burst", "5", "--sync-interval", "50ms"},
	})
	client := &http.Client{Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	var answered, refused atomic.Int64
	post := func(n *clusterNode, video, user string) {
		resp, err := client.Post("http://"+n.HTTP+"/videos/"+video+"/views", "application/json", strings.NewReader(`{"userId":"`+user+`"}`))
		if err != nil {
			t.Errorf("post to %s: %v", n.Name, err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			answered.Add(1)
		} else {
			refused.Add(1)
		}
	}
	var wg sync.WaitGroup
	for u := range 12 {
		for v := range 3 {
			for _, n := range c.Nodes { // the same view to both regions at once
				wg.Add(1)
				go func() { defer wg.Done(); post(n, fmt.Sprintf("au-%d", v), fmt.Sprintf("user-%d", u)) }()
			}
		}
	}
	wg.Wait()
	for range 12 { // one user over the rate limit (burst 5)
		post(c.Nodes[0], "au-0", "spammer")
	}
	if refused.Load() != 0 {
		t.Fatalf("%d views refused", refused.Load())
	}

	cfg := auditConfig{Endpoints: []string{c.Nodes[0].HTTP}, Token: c.AdminToken(), Wait: time.Minute}
	rep, err := auditCluster(ctx, cfg)
	var out bytes.Buffer
	if rep != nil {
		rep.write(&out, true)
	}
	t.Logf("audit after the racing views:\n%s", out.String())
	if err != nil || rep.Mismatches != 0 {
		t.Fatalf("audit: %v, %d mismatches", err, rep.Mismatches)
	}
	if len(rep.Nodes) != 2 {
		t.Fatalf("audit found %d nodes from one endpoint, want 2", len(rep.Nodes))
	}
	var arrivals, compensated, rateLimited int64
	for _, n := range rep.Nodes {
		arrivals += n.Events - n.Fates[store.FateCompensated]
		compensated += n.Fates[store.FateCompensated]
		rateLimited += n.Fates[store.FateRateLimited]
	}
	if arrivals != answered.Load() || rateLimited == 0 {
		t.Fatalf("logs hold %d arrivals (%d rate limited), %d views were answered", arrivals, rateLimited, answered.Load())
	}
	for _, v := range rep.Videos {
		want := uint64(12)
		if v.Video == "au-0" {
			want++ // the spammer's first view
		}
		if v.Expected != want {
			t.Errorf("video %s: expected %d, want %d", v.Video, v.Expected, want)
		}
	}
	t.Logf("views counted twice by racing regions and compensated: %d", compensated)

	// Tamper: one more view in node 2's own slot of au-1, written behind its back.
	victim := c.Nodes[1]
	victim.Terminate(30 * time.Second)
	tamper(t, victim.Data, crdt.Key{Video: "au-1", Event: region.EventView})
	if err := c.Start(ctx, victim); err != nil {
		t.Fatalf("restart %s: %v", victim.Name, err)
	}
	out.Reset()
	var errOut bytes.Buffer
	code := runAuditEnv(ctx, []string{"--endpoints", "http://" + c.Nodes[0].HTTP, "--admin-token", c.AdminToken(), "--wait", "3s"}, func(string) string { return "" }, &out, &errOut)
	t.Logf("audit after tampering:\n%s%s", out.String(), errOut.String())
	if code != auditMismatch {
		t.Fatalf("exit %d, want %d", code, auditMismatch)
	}
	if !strings.Contains(out.String(), "MISMATCH video au-1: expected 12") || !strings.Contains(out.String(), victim.Name+" 13 (+1)") {
		t.Fatalf("the tampered counter is not reported")
	}
	if strings.Contains(out.String(), "MISMATCH video au-0") || strings.Contains(out.String(), "MISMATCH video au-2") {
		t.Fatalf("untouched videos reported")
	}
}

// tamper adds one view to the first replica slot of k in the stopped node's
// store at dir, without any log event: what a bug or a bad hand would do.
func tamper(t *testing.T, dir string, k crdt.Key) {
	t.Helper()
	st, err := store.Open(store.DefaultOptions(dir))
	if err != nil {
		t.Fatalf("open the stopped node's store: %v", err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
	}()
	id, err := st.OpenIdentity(false)
	if err != nil {
		t.Fatal(err)
	}
	c, ok, err := st.Counter(k)
	if err != nil || !ok {
		t.Fatalf("read counter %v: %v, %v", k, ok, err)
	}
	before := c.Value()
	c.Increment(id.Replica, 1, time.Now().UnixMilli())
	m, err := store.CounterMutation(k, c)
	if err != nil {
		t.Fatal(err)
	}
	cm := store.NewCommitter(st, store.CommitterConfig{})
	tk, err := cm.Submit(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := cm.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("tampered with %v in %s: %d -> %d (slot of replica %s)", k, filepath.Base(dir), before, c.Value(), id.Replica)
}

// requireCleanAudit runs tally audit's check against the nodes at endpoints
// and fails the test on any mismatch, or if it finds other than nodes nodes.
func requireCleanAudit(t *testing.T, endpoints []string, token string, nodes int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := auditCluster(ctx, auditConfig{Endpoints: endpoints, Token: token, Wait: time.Minute})
	var out bytes.Buffer
	if rep != nil {
		rep.write(&out, false)
	}
	t.Logf("tally audit:\n%s", out.String())
	switch {
	case err != nil:
		t.Fatalf("audit: %v", err)
	case rep.Mismatches != 0:
		t.Fatalf("audit: %d videos mismatch", rep.Mismatches)
	case len(rep.Nodes) != nodes:
		t.Fatalf("audit read %d nodes, want %d", len(rep.Nodes), nodes)
	}
}
