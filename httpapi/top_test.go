package httpapi

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tallyhq/tally/region"
)

// topResult is the decoded answer of GET /v1/top.
type topResult struct {
	Event  string `json:"event"`
	Window string `json:"window"`
	K      int    `json:"k"`
	Videos []struct {
		VideoID string `json:"videoId"`
		Count   uint64 `json:"count"`
	} `json:"videos"`
}

// top reads GET /v1/top?query and requires a 200. It first moves the clock
// past the node's reuse of a computed list, so the answer is fresh.
func (e *testEnv) top(query string) topResult {
	e.t.Helper()
	e.clock.Advance(2 * time.Second)
	r := e.do(http.MethodGet, "/v1/top?"+query, "", nil)
	if r.status != http.StatusOK {
		e.t.Fatalf("GET /v1/top?%s: got %s, want 200", query, r)
	}
	checkJSONContentType(e.t, r)
	var out topResult
	strictDecode(e.t, r.body, &out)
	if out.Videos == nil {
		e.t.Fatalf("GET /v1/top?%s: videos is null in %s", query, r.body)
	}
	return out
}

// list renders the videos of a top list as "video=count ...".
func (t topResult) list() string {
	var parts []string
	for _, v := range t.Videos {
		parts = append(parts, fmt.Sprintf("%s=%d", v.VideoID, v.Count))
	}
	return strings.Join(parts, " ")
}

func TestTop(t *testing.T) {
	e := newEnv(t, nil)
	if got := e.top(""); got.Event != "view" || got.Window != "1h" || got.K != 10 || len(got.Videos) != 0 {
		t.Fatalf("empty top: %+v", got)
	}
	views := map[string]int{"t-b": 5, "t-a": 3, "t-c": 1, "t-d": 4}
	for video, n := range views {
		decodeBatch(t, e.postEvents(strings.NewReader(batchOf(n, video))))
	}
	// Shares rank on their own.
	decodeBatch(t, e.postEvents(strings.NewReader(
		`[{"videoId":"t-c","userId":"s1","event":"share"},{"videoId":"t-c","userId":"s2","event":"share"},{"videoId":"t-a","userId":"s1","event":"share"}]`)))

	for _, tc := range []struct {
		query, event, window string
		k                    int
		want                 string
	}{
		{"", "view", "1h", 10, "t-b=5 t-d=4 t-a=3 t-c=1"},
		{"k=2", "view", "1h", 2, "t-b=5 t-d=4"},
		{"event=view&window=24h&k=3", "view", "24h", 3, "t-b=5 t-d=4 t-a=3"},
		{"window=7d", "view", "7d", 10, "t-b=5 t-d=4 t-a=3 t-c=1"},
		{"event=share", "share", "1h", 10, "t-c=2 t-a=1"},
		{"event=like", "like", "1h", 10, ""},
		{"k=1000", "view", "1h", 1000, "t-b=5 t-d=4 t-a=3 t-c=1"},
	} {
		got := e.top(tc.query)
		if got.Event != tc.event || got.Window != tc.window || got.K != tc.k || got.list() != tc.want {
			t.Errorf("top?%s: %s %s k=%d [%s], want %s %s k=%d [%s]",
				tc.query, got.Event, got.Window, got.K, got.list(), tc.event, tc.window, tc.k, tc.want)
		}
	}

	// Two hours later the 1h window is empty; the day's windows are not.
	e.clock.Advance(2 * time.Hour)
	if got := e.top(""); len(got.Videos) != 0 {
		t.Fatalf("1h window two hours later: %s", got.list())
	}
	if got := e.top("window=24h&k=1"); got.list() != "t-b=5" {
		t.Fatalf("24h window two hours later: %s", got.list())
	}
}

func TestTopRefusedInputs(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range []struct {
		query, code string
		mentions    []string
	}{
		{"k=0", region.CodeInvalidK, []string{"1000"}},
		{"k=-1", region.CodeInvalidK, nil},
		{"k=1001", region.CodeInvalidK, nil},
		{"k=ten", region.CodeInvalidK, []string{"ten"}},
		{"k=1.5", region.CodeInvalidK, nil},
		{"k=99999999999999999999", region.CodeInvalidK, nil},
		{"window=2h", region.CodeInvalidWindow, []string{"1h", "24h", "7d"}},
		{"window=1H", region.CodeInvalidWindow, nil},
		{"event=dislike", region.CodeUnknownEvent, []string{"view", "like", "share"}},
		{"event=" + strings.Repeat("x", 100), region.CodeUnknownEvent, nil},
	} {
		t.Run(tc.query, func(t *testing.T) {
			r := e.do(http.MethodGet, "/v1/top?"+tc.query, "", nil)
			wantError(t, r, http.StatusBadRequest, tc.code)
			for _, m := range tc.mentions {
				if !strings.Contains(string(r.body), m) {
					t.Errorf("error %s does not mention %q", r.body, m)
				}
			}
		})
	}
}
