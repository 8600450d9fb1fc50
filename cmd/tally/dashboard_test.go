package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dashboardPage is what the dashboard shows, read from the DOM.
type dashboardPage struct {
	Region    string `json:"region"`
	Ready     string `json:"ready"`
	Video     string `json:"video"`
	Agreement string `json:"agreement"`
	Regions   map[string]struct {
		Count string `json:"count"`
		State string `json:"state"` // live, stale (last answer shown), unknown
	} `json:"regions"`
	Members map[string]struct {
		Status string `json:"status"`
		Count  string `json:"count"`
	} `json:"members"`
	Top       []string `json:"top"`
	Counted   string   `json:"counted"`
	AddResult string   `json:"addResult"`
}

const readDashboard = `
const q = (s) => document.querySelector(s).textContent;
const regions = {}, members = {};
for (const c of document.querySelectorAll("#regions .region"))
  regions[c.dataset.region] = {count: c.querySelector(".count").textContent, state: c.dataset.state};
for (const r of document.querySelectorAll("#members tr"))
  members[r.dataset.member] = {status: r.dataset.status, count: r.querySelector(".count").textContent};
return {region: q("#node-region"), ready: q("#node-ready"), video: q("#video-title"),
  agreement: q("#agreement"), regions, members, counted: q("#total-counted"), addResult: q("#add-result"),
  top: [...document.querySelectorAll("#top li")].map((l) => l.dataset.video)};`

func (p dashboardPage) String() string {
	b, _ := json.Marshal(p)
	return string(b)
}

// waitPage polls the page until cond holds.
func waitPage(t *testing.T, wd *webDriver, within time.Duration, what string, cond func(p dashboardPage) bool) dashboardPage {
	t.Helper()
	deadline := time.Now().Add(within)
	var p dashboardPage
	for {
		p = dashboardPage{}
		err := wd.script(readDashboard, &p)
		if err == nil && cond(p) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("dashboard: %s: not within %v; it shows %s (read error: %v)", what, within, p, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// allRegions reports whether every region card shows count, live.
func (p dashboardPage) allRegions(count string, regions ...string) bool {
	for _, r := range regions {
		if c, ok := p.Regions[r]; !ok || c.Count != count || c.State != "live" {
			return false
		}
	}
	return true
}

// TestDashboardInChromium drives the dashboard of a real `tally cluster` in
// headless Chromium: it shows every region converged, the count a click adds,
// a region falling behind while its node is frozen (SIGSTOP: cut off from the
// others, which keep taking views) and every region converging once it
// resumes. Set TALLY_DASHBOARD_SCREENSHOTS=DIR to keep the screenshots.
func TestDashboardInChromium(t *testing.T) {
	wd := startBrowser(t, 1280, 1000) // skips, naming the package, without Chromium
	shots := os.Getenv("TALLY_DASHBOARD_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	bin := buildTally(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := launchCluster(t, ctx, clusterSpec{
		Exe: bin, Dir: t.TempDir(), Regions: 3, Nodes: 1,
		Extra: []string{"--sync-interval", "50ms", "--in-memory"},
	})
	us, eu, ap := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	t.Cleanup(func() {
		if pid := ap.Pid(); pid > 0 {
			syscall.Kill(pid, syscall.SIGCONT) // a stopped process cannot stop cleanly
		}
	})
	client := &http.Client{Timeout: 10 * time.Second}
	view := func(n *clusterNode, user string) {
		t.Helper()
		resp, err := client.Post("http://"+n.HTTP+"/videos/e2e-v/views", "application/json", strings.NewReader(`{"userId":"`+user+`"}`))
		if err != nil {
			t.Fatalf("view on %s: %v", n.Name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"counted":true`) {
			t.Fatalf("view on %s: %d %s", n.Name, resp.StatusCode, body)
		}
	}
	view(us, "alice")
	view(eu, "bob")

	wd.open("http://" + us.HTTP + "/?video=e2e-v")
	p := waitPage(t, wd, time.Minute, "every region shows 2 views, converged", func(p dashboardPage) bool {
		return p.allRegions("2", "us", "eu", "ap") && p.Agreement == "converged"
	})
	if p.Region != "us" || p.Ready != "ready" || p.Video != "e2e-v" || len(p.Members) != 3 {
		t.Errorf("header and members: %s", p)
	}
	for _, n := range c.Nodes {
		if m := p.Members[n.Name]; m.Status != "alive" {
			t.Errorf("member %s shows %q, want alive: %s", n.Name, m.Status, p)
		}
	}
	if len(p.Top) == 0 || p.Top[0] != "e2e-v" || p.Counted != "1" {
		t.Errorf("top videos %v, counted here %q: want e2e-v first, 1 counted", p.Top, p.Counted)
	}

	// A person types the video and clicks "+1 view here".
	wd.typeInto("#video", "e2e-v")
	wd.click("#add-view")
	waitPage(t, wd, time.Minute, "the click counted and reached every region", func(p dashboardPage) bool {
		return strings.HasPrefix(p.AddResult, "counted") && p.allRegions("3", "us", "eu", "ap") && p.Agreement == "converged"
	})

	// ap freezes: to the others it is cut off. They keep counting; ap falls behind.
	if err := syscall.Kill(ap.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP %s: %v", ap.Name, err)
	}
	view(us, "carol")
	view(eu, "dave")
	waitPage(t, wd, time.Minute, "us and eu show 5, ap its last answer (3), diverged", func(p dashboardPage) bool {
		apCard := p.Regions["ap"]
		return p.allRegions("5", "us", "eu") && apCard.Count == "3" && apCard.State == "stale" && p.Agreement == "diverged"
	})
	waitPage(t, wd, time.Minute, "gossip declares ap down", func(p dashboardPage) bool {
		return p.Members[ap.Name].Status == "down"
	})
	wd.screenshot(filepath.Join(shots, "tally-dashboard-partitioned.png"))

	// ap resumes: it rejoins, catches up, and every region agrees again.
	if err := syscall.Kill(ap.Pid(), syscall.SIGCONT); err != nil {
		t.Fatalf("SIGCONT %s: %v", ap.Name, err)
	}
	waitPage(t, wd, 2*time.Minute, "every region shows 5 after ap resumed, converged", func(p dashboardPage) bool {
		return p.allRegions("5", "us", "eu", "ap") && p.Agreement == "converged" && p.Members[ap.Name].Status == "alive"
	})
	wd.screenshot(filepath.Join(shots, "tally-dashboard-converged.png"))

	// The real binary's metrics pass promtool too.
	resp, err := client.Get("http://" + us.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Log("promtool not installed (Debian package prometheus): metrics of the binary not checked with it")
		return
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(string(metrics))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics on %s: %v\n%s", us.Name, err, out)
	}
}
