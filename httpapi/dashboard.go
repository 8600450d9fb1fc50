package httpapi

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tallyhq/tally/region"
)

// The dashboard's page, script and style, built into the binary: no build
// step, no files beside it.
//
//go:embed dashboard
var dashboardFiles embed.FS

// Dashboard bounds.
const (
	// DefaultPeerTimeout bounds the dashboard's read of a count from a peer.
	DefaultPeerTimeout = 500 * time.Millisecond
	// dashboardTop is how many top videos the dashboard lists.
	dashboardTop = 10
	// topCacheFor is how long a top-videos answer is reused: computing it
	// reads every counter in memory.
	topCacheFor = time.Second
	// rateWindow is the span the ingest rate is averaged over.
	rateWindow = 10 * time.Second
	// maxRemembered bounds the peers the dashboard keeps showing after they
	// left the cluster status, and forgetAfter how long it shows them.
	maxRemembered = 256
	forgetAfter   = 10 * time.Minute
	// maxPeerAnswer bounds the body read from a peer's count answer.
	maxPeerAnswer = 64 << 10
)

// dashboard is the server side of the live dashboard: it gathers, per poll,
// this node's view of the cluster, each member's count of one video (asked of
// the member over HTTP, so a region that diverged shows it) and the ingest
// rate. It is safe for concurrent use.
type dashboard struct {
	node    *region.Node
	metrics *Metrics
	client  *http.Client
	scheme  string // how peers are asked: http, or https when this node serves TLS
	timeout time.Duration
	name    string // this node's name when it does not replicate
	start   time.Time

	mu      sync.Mutex                // protects the fields below
	seen    map[string]rememberedPeer // peers seen alive, by name
	samples []ingestSample            // oldest first, spanning about rateWindow
	top     []region.VideoCount
	topAt   time.Time
}

type rememberedPeer struct {
	peer     region.Peer
	lastSeen time.Time
}

type ingestSample struct {
	at                              time.Time
	counted, duplicate, rateLimited uint64
}

func newDashboard(node *region.Node, m *Metrics, o Options) *dashboard {
	d := &dashboard{
		node: node, metrics: m, timeout: o.PeerTimeout, name: o.NodeName, start: time.Now(), scheme: "http",
		client: &http.Client{Transport: &http.Transport{
			MaxIdleConnsPerHost: 2, IdleConnTimeout: 30 * time.Second,
			ResponseHeaderTimeout: o.PeerTimeout, TLSClientConfig: o.PeerTLS,
		}},
		seen: make(map[string]rememberedPeer),
	}
	if o.TLS != nil {
		// Nodes of one cluster serve alike: peers speak HTTPS too.
		d.scheme = "https"
	}
	d.sample(time.Now()) // so that the first poll already has a rate
	return d
}

// dashboardResponse answers GET /v1/dashboard.
type dashboardResponse struct {
	Node    dashboardNode `json:"node"`
	Video   string        `json:"video"` // the video asked for; "" for none
	Members []memberJSON  `json:"members"`
	// Regions holds each region's count of Video, as its members report it.
	Regions []regionCountJSON `json:"regions"`
	// Converged: every region reported Video's count and all agree. Null
	// without a video.
	Converged *bool          `json:"converged"`
	Top       []topVideoJSON `json:"top"`
	Ingest    ingestRateJSON `json:"ingest"`
}

type dashboardNode struct {
	Name          string  `json:"name"`
	Region        string  `json:"region"`
	Replica       string  `json:"replica"`
	Durability    string  `json:"durability"`
	Replicating   bool    `json:"replicating"`
	Ready         bool    `json:"ready"`
	ReadyReason   string  `json:"readyReason"`
	UptimeSeconds float64 `json:"uptimeSeconds"`
	Time          string  `json:"time"` // RFC 3339, the node's clock
}

// Member statuses on the dashboard.
const (
	memberAlive   = "alive"   // alive in gossip, replicating
	memberSyncing = "syncing" // alive in gossip, not yet caught up once
	memberDown    = "down"    // seen before, no longer alive in gossip (failed, left, cut off)
)

type memberJSON struct {
	Name     string `json:"name"`
	Region   string `json:"region"`
	HTTPAddr string `json:"httpAddr,omitempty"`
	Self     bool   `json:"self"`
	Status   string `json:"status"` // alive, syncing, down
	// LagSeconds is how old the newest complete state from the member is
	// (-1: never in contact; 0 for this node).
	LagSeconds float64 `json:"lagSeconds"`
	Behind     uint64  `json:"behind"` // our changes it has not acknowledged
	// ViewCount is the member's own answer for the video; null when there is
	// no video or the member did not answer (see Error).
	ViewCount *uint64 `json:"viewCount"`
	Error     string  `json:"error,omitempty"`
	LastSeen  string  `json:"lastSeen,omitempty"` // for down members
}

type regionCountJSON struct {
	Region    string  `json:"region"`
	Local     bool    `json:"local"`
	Members   int     `json:"members"`
	Reachable int     `json:"reachable"` // members that answered with a count
	ViewCount *uint64 `json:"viewCount"` // the highest count its members answered
	// LagSeconds is the freshest lag among its members (-1 unknown; 0 local).
	LagSeconds float64 `json:"lagSeconds"`
}

type topVideoJSON struct {
	VideoID     string  `json:"videoId"`
	ViewCount   uint64  `json:"viewCount"`
	LastUpdated *string `json:"lastUpdated"`
}

type ingestRateJSON struct {
	Counted     uint64 `json:"counted"`
	Duplicate   uint64 `json:"duplicate"`
	RateLimited uint64 `json:"rateLimited"`
	// EventsPerSecond and CountedPerSecond average over WindowSeconds.
	EventsPerSecond  float64 `json:"eventsPerSecond"`
	CountedPerSecond float64 `json:"countedPerSecond"`
	WindowSeconds    float64 `json:"windowSeconds"`
}

// getDashboard is GET /v1/dashboard?video=ID.
func (s *Server) getDashboard(c echo.Context) error {
	video := c.QueryParam("video")
	if video != "" {
		if err := region.CheckID(region.CodeInvalidVideoID, "video", video); err != nil {
			return err
		}
	}
	out, err := s.dash.gather(c.Request().Context(), video, s.ready)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, out)
}

// gather builds one dashboard answer.
func (d *dashboard) gather(ctx context.Context, video string, ready *readiness) (dashboardResponse, error) {
	now := time.Now()
	st := d.node.Stats()
	cs := d.node.ClusterStatus()
	ok, why := ready.check()
	out := dashboardResponse{
		Node: dashboardNode{
			Name: d.name, Region: st.Region, Replica: st.ReplicaID.String(), Durability: string(st.Durability),
			Replicating: cs.Enabled, Ready: ok, ReadyReason: why,
			UptimeSeconds: now.Sub(d.start).Seconds(), Time: now.UTC().Format(time.RFC3339Nano),
		},
		Video: video, Members: []memberJSON{}, Regions: []regionCountJSON{}, Top: []topVideoJSON{},
	}
	if cs.Enabled {
		out.Node.Name = string(cs.Engine.Self)
	}

	self := memberJSON{Name: out.Node.Name, Region: st.Region, Self: true, Status: memberAlive}
	if video != "" {
		cnt, err := d.node.Views(video)
		if err != nil {
			return out, fmt.Errorf("dashboard: read own count: %w", err)
		}
		self.ViewCount = &cnt.Value
	}
	out.Members = append(out.Members, self)
	out.Members = append(out.Members, d.peers(now, cs)...)
	if video != "" {
		d.askCounts(ctx, video, out.Members[1:])
	}
	out.Regions = regionCounts(st.Region, out.Members)
	if video != "" {
		converged := len(out.Regions) > 0
		for _, r := range out.Regions {
			if r.ViewCount == nil || *r.ViewCount != *out.Regions[0].ViewCount {
				converged = false
			}
		}
		out.Converged = &converged
	}
	for _, v := range d.topVideos(now) {
		tv := topVideoJSON{VideoID: v.Video, ViewCount: v.Count}
		if !v.LastUpdated.IsZero() {
			t := v.LastUpdated.Format(time.RFC3339Nano)
			tv.LastUpdated = &t
		}
		out.Top = append(out.Top, tv)
	}
	out.Ingest = d.ingestRate(now)
	return out, nil
}

// peers lists the cluster's other members: those in the cluster status, then
// those seen before and gone since (down), sorted by region and name.
func (d *dashboard) peers(now time.Time, cs region.ClusterStatus) []memberJSON {
	var out []memberJSON
	present := map[string]bool{}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range cs.Peers {
		name := string(p.PeerStatus.Peer)
		present[name] = true
		d.seen[name] = rememberedPeer{peer: p.Peer, lastSeen: now}
		m := memberJSON{
			Name: name, Region: p.Region, HTTPAddr: p.HTTPAddr, Status: memberAlive,
			LagSeconds: p.LagSeconds, Behind: p.Behind,
		}
		if p.LagSeconds < 0 {
			m.Status = memberSyncing
		}
		out = append(out, m)
	}
	for _, name := range slices.Sorted(maps.Keys(d.seen)) {
		rp := d.seen[name]
		switch {
		case present[name]:
		case now.Sub(rp.lastSeen) > forgetAfter:
			delete(d.seen, name)
		default:
			out = append(out, memberJSON{
				Name: name, Region: rp.peer.Region, HTTPAddr: rp.peer.HTTPAddr, Status: memberDown,
				LagSeconds: -1, LastSeen: rp.lastSeen.UTC().Format(time.RFC3339),
			})
		}
	}
	for len(d.seen) > maxRemembered { // drop the longest gone first
		oldest := ""
		for name, rp := range d.seen {
			if !present[name] && (oldest == "" || rp.lastSeen.Before(d.seen[oldest].lastSeen)) {
				oldest = name
			}
		}
		if oldest == "" {
			break
		}
		delete(d.seen, oldest)
	}
	slices.SortFunc(out, func(a, b memberJSON) int {
		if a.Region != b.Region {
			if a.Region < b.Region {
				return -1
			}
			return 1
		}
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// askCounts asks every member that is not down for its count of video, in
// parallel, each bounded by the peer timeout.
func (d *dashboard) askCounts(ctx context.Context, video string, members []memberJSON) {
	var wg sync.WaitGroup
	for i := range members {
		m := &members[i]
		switch {
		case m.Status == memberDown:
			m.Error = "down: not alive in gossip"
			continue
		case m.HTTPAddr == "":
			m.Error = "no HTTP address advertised"
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := d.askCount(ctx, m.HTTPAddr, video)
			if err != nil {
				m.Error = "unreachable: " + err.Error()
				return
			}
			m.ViewCount = &n
		}()
	}
	wg.Wait()
}

// askCount reads video's count from the node serving HTTP at addr.
func (d *dashboard) askCount(ctx context.Context, addr, video string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	u := d.scheme + "://" + addr + "/videos/" + url.PathEscape(video) + "/views"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, fmt.Errorf("ask %s: %w", addr, err)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("ask %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPeerAnswer))
	if err != nil {
		return 0, fmt.Errorf("read answer of %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s answered %d", addr, resp.StatusCode)
	}
	var cr countResponse
	if err := json.Unmarshal(body, &cr); err != nil {
		return 0, fmt.Errorf("decode answer of %s: %w", addr, err)
	}
	return cr.ViewCount, nil
}

// regionCounts summarises members by region, this node's region first.
func regionCounts(local string, members []memberJSON) []regionCountJSON {
	byRegion := map[string]*regionCountJSON{}
	var order []string
	for _, m := range members {
		r := byRegion[m.Region]
		if r == nil {
			r = &regionCountJSON{Region: m.Region, Local: m.Region == local, LagSeconds: -1}
			byRegion[m.Region] = r
			order = append(order, m.Region)
		}
		r.Members++
		if m.ViewCount != nil {
			r.Reachable++
			if r.ViewCount == nil || *m.ViewCount > *r.ViewCount {
				v := *m.ViewCount
				r.ViewCount = &v
			}
		}
		lag := m.LagSeconds
		if m.Self {
			lag = 0
		}
		if lag >= 0 && (r.LagSeconds < 0 || lag < r.LagSeconds) {
			r.LagSeconds = lag
		}
	}
	slices.SortStableFunc(order, func(a, b string) int {
		switch {
		case a == local && b != local:
			return -1
		case b == local && a != local:
			return 1
		case a < b:
			return -1
		case a > b:
			return 1
		}
		return 0
	})
	out := make([]regionCountJSON, 0, len(order))
	for _, name := range order {
		out = append(out, *byRegion[name])
	}
	return out
}

// topVideos returns the top videos, recomputed at most once per topCacheFor.
func (d *dashboard) topVideos(now time.Time) []region.VideoCount {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.top == nil || now.Sub(d.topAt) >= topCacheFor {
		d.top = d.node.TopVideos(dashboardTop)
		d.topAt = now
	}
	return d.top
}

// sample records the ingest totals at now, at most 4 times per second, and
// drops samples older than rateWindow but for one, the base of the rate.
func (d *dashboard) sample(now time.Time) {
	c, dup, rl := d.metrics.ingestTotals()
	d.mu.Lock()
	defer d.mu.Unlock()
	if n := len(d.samples); n > 0 && now.Sub(d.samples[n-1].at) < 250*time.Millisecond {
		return
	}
	d.samples = append(d.samples, ingestSample{at: now, counted: c, duplicate: dup, rateLimited: rl})
	drop := 0
	for drop < len(d.samples)-2 && now.Sub(d.samples[drop+1].at) >= rateWindow {
		drop++
	}
	d.samples = slices.Delete(d.samples, 0, drop)
}

// ingestRate reports the totals now and the rates since the oldest sample.
func (d *dashboard) ingestRate(now time.Time) ingestRateJSON {
	d.sample(now)
	c, dup, rl := d.metrics.ingestTotals()
	out := ingestRateJSON{Counted: c, Duplicate: dup, RateLimited: rl}
	d.mu.Lock()
	base := d.samples[0]
	d.mu.Unlock()
	// Over less than a second the rate would be all noise: the first events
	// after a quiet spell would read as a burst.
	dt := max(now.Sub(base.at).Seconds(), 1)
	events := (c + dup + rl) - (base.counted + base.duplicate + base.rateLimited)
	out.EventsPerSecond = float64(events) / dt
	out.CountedPerSecond = float64(c-base.counted) / dt
	out.WindowSeconds = dt
	return out
}

// dashboardAssets returns the embedded files and the page itself.
func dashboardAssets() (fs.FS, []byte) {
	sub, err := fs.Sub(dashboardFiles, "dashboard")
	if err != nil {
		panic(fmt.Sprintf("dashboard assets: %v", err)) // unreachable: the embed pattern names the folder
	}
	index, err := fs.ReadFile(sub, "index.html")
	if err != nil {
		panic(fmt.Sprintf("dashboard assets: %v", err)) // unreachable: index.html is embedded
	}
	return sub, index
}

// serveAsset is GET /dashboard/NAME: an embedded file, or a JSON 404.
func serveAsset(assets fs.FS) echo.HandlerFunc {
	return func(c echo.Context) error {
		name := c.Param("*")
		if st, err := fs.Stat(assets, name); err != nil || st.IsDir() {
			return echo.ErrNotFound
		}
		securityHeaders(c.Response().Header())
		http.ServeFileFS(c.Response(), c.Request(), assets, name)
		return nil
	}
}

// securityHeaders are set on the dashboard's answers: the page loads nothing
// but its own script and style, and talks only to its own node.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}
