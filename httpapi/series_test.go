package httpapi

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tallyhq/tally/region"
)

// seriesResult is the decoded answer of GET /v1/videos/{id}/counts.
type seriesResult struct {
	VideoID string `json:"videoId"`
	Event   string `json:"event"`
	Step    string `json:"step"`
	From    string `json:"from"`
	To      string `json:"to"`
	Total   int64  `json:"total"`
	Points  []struct {
		Start string `json:"start"`
		Count int64  `json:"count"`
	} `json:"points"`
}

// counts reads GET /v1/videos/{video}/counts?query and requires a 200.
func (e *testEnv) counts(video, query string) seriesResult {
	e.t.Helper()
	r := e.do(http.MethodGet, "/v1/videos/"+video+"/counts?"+query, "", nil)
	if r.status != http.StatusOK {
		e.t.Fatalf("GET counts of %s?%s: got %s, want 200", video, query, r)
	}
	checkJSONContentType(e.t, r)
	var out seriesResult
	strictDecode(e.t, r.body, &out)
	if out.Points == nil {
		e.t.Fatalf("GET counts: points is null in %s", r.body)
	}
	var sum int64
	for _, p := range out.Points {
		sum += p.Count
	}
	if sum != out.Total {
		e.t.Fatalf("GET counts: total %d, Σ points %d in %s", out.Total, sum, r.body)
	}
	return out
}

// nonZero renders the non-zero points of s as "start=count ...".
func (s seriesResult) nonZero() string {
	var b strings.Builder
	for _, p := range s.Points {
		if p.Count != 0 {
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(p.Start + "=" + strconv.FormatInt(p.Count, 10))
		}
	}
	return b.String()
}

func rfc(t time.Time) string { return url.QueryEscape(t.UTC().Format(time.RFC3339Nano)) }

func TestCountsSeries(t *testing.T) {
	e := newEnv(t, nil)
	// One view ten minutes ago (04:50), three now (05:00:00.123).
	e.clock.Set(testNow.Add(-10 * time.Minute))
	e.view("sv", "u0")
	e.clock.Set(testNow)
	for _, u := range []string{"u1", "u2", "u3"} {
		e.view("sv", u)
	}
	e.view("sv", "u1") // a duplicate is not in any bucket
	views := int64(e.count("sv"))
	if views != 4 {
		t.Fatalf("view count %d, want 4", views)
	}

	// Defaults: views per minute over the last hour, up to now.
	got := e.counts("sv", "")
	if got.VideoID != "sv" || got.Event != "view" || got.Step != "minute" ||
		got.From != "2026-11-22T04:00:00Z" || got.To != "2026-11-22T05:01:00Z" || len(got.Points) != 61 {
		t.Fatalf("default series: %+v", got)
	}
	if got.Total != views || got.nonZero() != "2026-11-22T04:50:00Z=1 2026-11-22T05:00:00Z=3" {
		t.Fatalf("default series: total %d, points %s", got.Total, got.nonZero())
	}
	if last := got.Points[len(got.Points)-1]; last.Start != "2026-11-22T05:00:00Z" || last.Count != 3 {
		t.Fatalf("the current minute: %+v", last)
	}

	for _, tc := range []struct {
		name, query    string
		step, from, to string
		points         int
		nonZero        string
		total          int64
	}{
		{"hours, RFC 3339", "step=hour&from=" + rfc(testNow.Add(-2*time.Hour)) + "&to=" + rfc(testNow),
			"hour", "2026-11-22T03:00:00Z", "2026-11-22T06:00:00Z", 3, "2026-11-22T04:00:00Z=1 2026-11-22T05:00:00Z=3", 4},
		{"days, unix ms", "step=day&from=" + ms(testNow.Add(-72*time.Hour)) + "&to=" + ms(testNow.Add(time.Minute)),
			"day", "2026-11-19T00:00:00Z", "2026-11-23T00:00:00Z", 4, "2026-11-22T00:00:00Z=4", 4},
		{"day, default range", "step=day", "day", "2026-11-22T00:00:00Z", "2026-11-23T00:00:00Z", 1, "2026-11-22T00:00:00Z=4", 4},
		{"only from", "from=" + ms(testNow.Add(-5*time.Minute)), "minute", "2026-11-22T04:55:00Z", "2026-11-22T05:01:00Z", 6, "2026-11-22T05:00:00Z=3", 3},
		{"only to: an hour before it", "to=" + rfc(testNow.Add(-5*time.Minute)), "minute", "2026-11-22T03:55:00Z", "2026-11-22T04:56:00Z", 61, "2026-11-22T04:50:00Z=1", 1},
		{"zone offset with an unescaped +", "step=hour&from=2026-11-22T06:00:00+02:00&to=2026-11-22T07:30:00+02:00",
			"hour", "2026-11-22T04:00:00Z", "2026-11-22T06:00:00Z", 2, "2026-11-22T04:00:00Z=1 2026-11-22T05:00:00Z=3", 4},
		{"explicit defaults", "event=view&step=minute", "minute", "2026-11-22T04:00:00Z", "2026-11-22T05:01:00Z", 61, "2026-11-22T04:50:00Z=1 2026-11-22T05:00:00Z=3", 4},
		{"step=minute over 7 days back", "from=" + ms(testNow.Add(-7*24*time.Hour+time.Minute)), "minute", "2026-11-15T05:01:00Z", "2026-11-22T05:01:00Z", 10080, "2026-11-22T04:50:00Z=1 2026-11-22T05:00:00Z=3", 4},
		{"step=day from 30 days ago", "step=day&from=" + ms(testNow.Add(-30*24*time.Hour)), "day", "2026-10-23T00:00:00Z", "2026-11-23T00:00:00Z", 31, "2026-11-22T00:00:00Z=4", 4},
		{"before the views", "to=" + ms(testNow.Add(-30*time.Minute)), "minute", "2026-11-22T03:30:00Z", "2026-11-22T04:31:00Z", 61, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := e.counts("sv", tc.query)
			if got.Step != tc.step || got.From != tc.from || got.To != tc.to || len(got.Points) != tc.points || got.Event != "view" {
				t.Fatalf("got step %s [%s, %s) %d points, want %s [%s, %s) %d points",
					got.Step, got.From, got.To, len(got.Points), tc.step, tc.from, tc.to, tc.points)
			}
			if got.nonZero() != tc.nonZero || got.Total != tc.total {
				t.Fatalf("got total %d points %q, want %d %q", got.Total, got.nonZero(), tc.total, tc.nonZero)
			}
		})
	}

	// A video never viewed has a series of zeros.
	if got := e.counts("never", "step=hour"); got.Total != 0 || len(got.Points) != 2 {
		t.Fatalf("never viewed: %+v", got)
	}
}

func TestCountsOfLikesAndShares(t *testing.T) {
	e := newEnv(t, nil)
	e.like("ls", "u1")
	e.like("ls", "u2")
	e.unlike("ls", "u2")
	r := e.postEvents(strings.NewReader(`[{"videoId":"ls","userId":"u1","event":"share"},{"videoId":"ls","userId":"u2","event":"share"}]`))
	if got := decodeBatch(t, r); got.Counted != 2 {
		t.Fatalf("shares: %s", r.body)
	}
	if got := e.counts("ls", "event=like"); got.Event != "like" || got.Total != 1 || got.nonZero() != "2026-11-22T05:00:00Z=1" {
		t.Fatalf("likes: total %d points %s", got.Total, got.nonZero())
	}
	if got := e.counts("ls", "event=share&step=day"); got.Event != "share" || got.Total != 2 {
		t.Fatalf("shares: %+v", got)
	}
	if got := e.counts("ls", "event=view"); got.Total != 0 {
		t.Fatalf("views: %+v", got)
	}
}

func TestCountsRefusedInputs(t *testing.T) {
	e := newEnv(t, nil)
	e.view("rv", "u1")
	long := strings.Repeat("e", 200)
	for _, tc := range []struct {
		name, path string
		code       string
		mentions   []string
	}{
		{"unknown event", "/v1/videos/rv/counts?event=dislike", region.CodeUnknownEvent, []string{"dislike", "view", "like", "share"}},
		{"event in capitals", "/v1/videos/rv/counts?event=VIEW", region.CodeUnknownEvent, nil},
		{"very long event", "/v1/videos/rv/counts?event=" + long, region.CodeUnknownEvent, nil},
		{"from after to", "/v1/videos/rv/counts?from=" + ms(testNow) + "&to=" + ms(testNow.Add(-time.Hour)), region.CodeInvalidRange, nil},
		{"from equal to", "/v1/videos/rv/counts?from=" + ms(testNow) + "&to=" + ms(testNow), region.CodeInvalidRange, nil},
		{"from after the default to", "/v1/videos/rv/counts?from=" + ms(testNow.Add(time.Hour)), region.CodeInvalidRange, nil},
		{"unparseable from", "/v1/videos/rv/counts?from=yesterday", CodeInvalidTime, []string{"from", "yesterday", "RFC 3339"}},
		{"unparseable to", "/v1/videos/rv/counts?to=2026-11-22", CodeInvalidTime, []string{"to"}},
		{"fractional ms", "/v1/videos/rv/counts?from=1.5", CodeInvalidTime, nil},
		{"negative from", "/v1/videos/rv/counts?from=-5", CodeInvalidTime, []string{"1970"}},
		{"from before 1970", "/v1/videos/rv/counts?from=1969-12-31T23:59:59Z", CodeInvalidTime, nil},
		{"to after 9999", "/v1/videos/rv/counts?to=253402300800000", CodeInvalidTime, nil},
		{"overflowing ms", "/v1/videos/rv/counts?to=99999999999999999999999", CodeInvalidTime, nil},
		{"very long from", "/v1/videos/rv/counts?from=" + long, CodeInvalidTime, nil},
		{"unknown step", "/v1/videos/rv/counts?step=second", region.CodeInvalidStep, []string{"minute", "hour", "day"}},
		{"step in capitals", "/v1/videos/rv/counts?step=Hour", region.CodeInvalidStep, nil},
		{"minutes from 30 days ago", "/v1/videos/rv/counts?step=minute&from=" + ms(testNow.Add(-30*24*time.Hour)),
			region.CodeResolutionNotRetained, []string{"minute buckets for 7d", "hour buckets for 365d", "day buckets forever"}},
		{"hours from 400 days ago", "/v1/videos/rv/counts?step=hour&from=" + rfc(testNow.Add(-400*24*time.Hour)),
			region.CodeResolutionNotRetained, []string{"hour"}},
		{"days since 1970", "/v1/videos/rv/counts?step=day&from=0", region.CodeTooManyPoints, nil},
		{"bad video id", "/v1/videos/bad%20id/counts", region.CodeInvalidVideoID, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(http.MethodGet, tc.path, "", nil)
			wantError(t, r, http.StatusBadRequest, tc.code)
			for _, m := range tc.mentions {
				if !strings.Contains(string(r.body), m) {
					t.Errorf("error %s does not mention %q", r.body, m)
				}
			}
			if len(r.body) > 1024 {
				t.Errorf("error answer of %d bytes: %.200s...", len(r.body), r.body)
			}
		})
	}
}

func TestCountsRetentionFollowsConfig(t *testing.T) {
	e := newEnv(t, func(c *region.Config) {
		c.Retention = region.Retention{Minute: 2 * 24 * time.Hour, Hour: 30 * 24 * time.Hour}
	})
	r := e.do(http.MethodGet, "/v1/videos/rc/counts?from="+ms(testNow.Add(-3*24*time.Hour)), "", nil)
	wantError(t, r, http.StatusBadRequest, region.CodeResolutionNotRetained)
	for _, m := range []string{"minute buckets for 2d", "hour buckets for 30d", "day buckets forever"} {
		if !strings.Contains(string(r.body), m) {
			t.Errorf("error %s does not mention %q", r.body, m)
		}
	}
	// The same range by the hour is kept.
	if got := e.counts("rc", "step=hour&from="+ms(testNow.Add(-3*24*time.Hour))); len(got.Points) != 73 {
		t.Fatalf("hours over 3 days: %d points", len(got.Points))
	}
}

// uniqueResult is the decoded answer of GET /v1/videos/{id}/unique-viewers.
type uniqueResult struct {
	VideoID       string  `json:"videoId"`
	UniqueViewers uint64  `json:"uniqueViewers"`
	Approx        bool    `json:"approx"`
	StandardError float64 `json:"standardError"`
}

func (e *testEnv) uniqueViewers(video string) uniqueResult {
	e.t.Helper()
	r := e.do(http.MethodGet, "/v1/videos/"+video+"/unique-viewers", "", nil)
	if r.status != http.StatusOK {
		e.t.Fatalf("GET unique viewers of %s: got %s, want 200", video, r)
	}
	checkJSONContentType(e.t, r)
	var out uniqueResult
	strictDecode(e.t, r.body, &out)
	if out.VideoID != video || !out.Approx || out.StandardError != 0.0081 {
		e.t.Fatalf("GET unique viewers of %s: %s", video, r.body)
	}
	return out
}

func TestUniqueViewers(t *testing.T) {
	e := newEnv(t, nil)
	if got := e.uniqueViewers("uv"); got.UniqueViewers != 0 {
		t.Fatalf("never viewed: %+v", got)
	}
	for _, u := range []string{"a", "b", "c", "a", "b"} {
		e.view("uv", u)
	}
	if got := e.uniqueViewers("uv"); got.UniqueViewers != 3 {
		t.Fatalf("3 users: estimate %d", got.UniqueViewers)
	}

	// 100 distinct users, each twice (the second view is a duplicate), and
	// likes, which are not views.
	decodeBatch(t, e.postEvents(strings.NewReader(batchOf(100, "uv100"))))
	decodeBatch(t, e.postEvents(strings.NewReader(batchOf(100, "uv100"))))
	for _, u := range []string{"x1", "x2", "x3"} {
		e.like("uv100", u)
	}
	if c := e.count("uv100"); c != 100 {
		t.Fatalf("view count %d, want 100", c)
	}
	got := e.uniqueViewers("uv100")
	if got.UniqueViewers < 97 || got.UniqueViewers > 103 {
		t.Fatalf("100 users: estimate %d, want 100 ± 3", got.UniqueViewers)
	}

	r := e.do(http.MethodGet, "/v1/videos/bad%20id/unique-viewers", "", nil)
	wantError(t, r, http.StatusBadRequest, region.CodeInvalidVideoID)
}
