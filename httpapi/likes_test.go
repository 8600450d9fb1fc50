package httpapi

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/tallyhq/tally/region"
)

// likeResult is the decoded answer of POST /v1/likes and DELETE /v1/likes/{id}.
type likeResult struct {
	VideoID string `json:"videoId"`
	UserID  string `json:"userId"`
	Liked   bool   `json:"liked"`
	Changed bool   `json:"changed"`
	Count   uint64 `json:"count"`
	Approx  bool   `json:"approx"`
	Reason  string `json:"reason"`
}

func decodeLike(t testing.TB, r response) likeResult {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("like: got %s, want 200", r)
	}
	checkJSONContentType(t, r)
	var out likeResult
	strictDecode(t, r.body, &out)
	if out.Approx {
		t.Fatalf("like answer %s: approx must be false", r.body)
	}
	return out
}

// like posts a like of video by user and requires a 200.
func (e *testEnv) like(video, user string) likeResult {
	e.t.Helper()
	r := e.do(http.MethodPost, "/v1/likes", "application/json", strings.NewReader(fmt.Sprintf(`{"videoId":%q,"userId":%q}`, video, user)))
	return decodeLike(e.t, r)
}

// unlike takes user's like of video back and requires a 200.
func (e *testEnv) unlike(video, user string) likeResult {
	e.t.Helper()
	r := e.do(http.MethodDelete, "/v1/likes/"+video, "application/json", strings.NewReader(fmt.Sprintf(`{"userId":%q}`, user)))
	return decodeLike(e.t, r)
}

// likes reads GET /v1/likes/{video}.
func (e *testEnv) likes(video string) uint64 {
	e.t.Helper()
	r := e.do(http.MethodGet, "/v1/likes/"+video, "", nil)
	if r.status != http.StatusOK {
		e.t.Fatalf("GET likes of %s: got %s, want 200", video, r)
	}
	checkJSONContentType(e.t, r)
	var out struct {
		VideoID string `json:"videoId"`
		Count   uint64 `json:"count"`
		Approx  bool   `json:"approx"`
	}
	strictDecode(e.t, r.body, &out)
	if out.VideoID != video || out.Approx {
		e.t.Fatalf("GET likes of %s: %s", video, r.body)
	}
	return out.Count
}

func TestLikeUnlikeIdempotent(t *testing.T) {
	e := newEnv(t, nil)
	if n := e.likes("lk"); n != 0 {
		t.Fatalf("never liked: count %d", n)
	}
	steps := []struct {
		op      string // like, unlike
		user    string
		changed bool
		count   uint64
	}{
		{"unlike", "u1", false, 0}, // nothing to take back: never below zero
		{"like", "u1", true, 1},
		{"like", "u1", false, 1}, // a retry (after a failover, say) is no error
		{"unlike", "u1", true, 0},
		{"unlike", "u1", false, 0},
		{"like", "u1", true, 1}, // liking again after an unlike counts again
		{"like", "u2", true, 2},
		{"like", "u2", false, 2},
		{"unlike", "u3", false, 2}, // a user who never liked
		{"unlike", "u1", true, 1},
		{"unlike", "u2", true, 0},
		{"unlike", "u2", false, 0},
	}
	for i, s := range steps {
		var got likeResult
		if s.op == "like" {
			got = e.like("lk", s.user)
		} else {
			got = e.unlike("lk", s.user)
		}
		want := likeResult{VideoID: "lk", UserID: s.user, Liked: s.op == "like", Changed: s.changed, Count: s.count}
		if got != want {
			t.Fatalf("step %d (%s by %s): got %+v, want %+v", i, s.op, s.user, got, want)
		}
		if n := e.likes("lk"); n != s.count {
			t.Fatalf("step %d: GET likes %d, want %d", i, n, s.count)
		}
	}
	// Likes are not views, and views are not likes.
	if c := e.count("lk"); c != 0 {
		t.Fatalf("likes counted %d views", c)
	}
	e.view("lk", "u1")
	if n := e.likes("lk"); n != 0 {
		t.Fatalf("a view counted as a like: %d", n)
	}
	// Another video is counted apart.
	if got := e.like("lk2", "u1"); !got.Changed || got.Count != 1 {
		t.Fatalf("like of another video: %+v", got)
	}
	if n := e.likes("lk"); n != 0 {
		t.Fatalf("a like of lk2 counted on lk: %d", n)
	}
}

func TestLikeTimestampAndEscapedVideo(t *testing.T) {
	e := newEnv(t, nil)
	r := e.do(http.MethodPost, "/v1/likes", "application/json",
		strings.NewReader(`{"videoId":"a:b","userId":"u1","timestamp":`+ms(testNow)+`}`))
	if got := decodeLike(t, r); !got.Changed || got.Count != 1 {
		t.Fatalf("like with a timestamp: %+v", got)
	}
	r = e.do(http.MethodDelete, "/v1/likes/a%3Ab", "application/json",
		strings.NewReader(`{"userId":"u1","timestamp":"2026-11-22T05:00:00Z"}`))
	if got := decodeLike(t, r); !got.Changed || got.Count != 0 || got.VideoID != "a:b" {
		t.Fatalf("unlike of a percent-encoded video: %+v", got)
	}
}

func TestLikeRateLimited(t *testing.T) {
	e := newEnv(t, func(c *region.Config) { c.UserRate, c.UserBurst = 1, 1 })
	if got := e.like("rl", "u1"); !got.Changed || got.Count != 1 || got.Reason != "" {
		t.Fatalf("first like: %+v", got)
	}
	// The clock stands still: the bucket is empty.
	got := e.unlike("rl", "u1")
	if got.Changed || got.Reason != "rate_limited" || got.Count != 1 {
		t.Fatalf("rate-limited unlike: %+v, want changed:false reason rate_limited count 1", got)
	}
	if n := e.likes("rl"); n != 1 {
		t.Fatalf("a rate-limited unlike took the like back: %d", n)
	}
}

func TestLikeRefusedInputs(t *testing.T) {
	e := newEnv(t, nil)
	e.like("ok", "u0")
	for _, tc := range []struct {
		name, method, path, ct, body string
		status                       int
		code                         string
	}{
		{"like without userId", "POST", "/v1/likes", "application/json", `{"videoId":"ok"}`, 400, region.CodeInvalidUserID},
		{"like with null userId", "POST", "/v1/likes", "application/json", `{"videoId":"ok","userId":null}`, 400, region.CodeInvalidUserID},
		{"like with empty userId", "POST", "/v1/likes", "application/json", `{"videoId":"ok","userId":""}`, 400, region.CodeInvalidUserID},
		{"like without videoId", "POST", "/v1/likes", "application/json", `{"userId":"u1"}`, 400, region.CodeInvalidVideoID},
		{"like of a bad videoId", "POST", "/v1/likes", "application/json", `{"videoId":"bad id","userId":"u1"}`, 400, region.CodeInvalidVideoID},
		{"like with a bad timestamp", "POST", "/v1/likes", "application/json", `{"videoId":"ok","userId":"u1","timestamp":"soon"}`, 400, region.CodeInvalidTimestamp},
		{"like, malformed JSON", "POST", "/v1/likes", "application/json", `{"videoId":"ok",`, 400, CodeMalformedJSON},
		{"like, trailing data", "POST", "/v1/likes", "application/json", `{"videoId":"ok","userId":"u1"} {}`, 400, CodeMalformedJSON},
		{"like, userId a number", "POST", "/v1/likes", "application/json", `{"videoId":"ok","userId":5}`, 400, CodeMalformedJSON},
		{"like as text/plain", "POST", "/v1/likes", "text/plain", `{"videoId":"ok","userId":"u1"}`, 415, CodeUnsupportedMediaType},
		{"like without content type", "POST", "/v1/likes", "", `{"videoId":"ok","userId":"u1"}`, 415, CodeUnsupportedMediaType},
		{"like over 4 KiB", "POST", "/v1/likes", "application/json", padTo(`{"videoId":"ok","userId":"u1"}`, MaxViewBody+1), 413, CodeBodyTooLarge},
		{"unlike without userId", "DELETE", "/v1/likes/ok", "application/json", `{}`, 400, region.CodeInvalidUserID},
		{"unlike, malformed JSON", "DELETE", "/v1/likes/ok", "application/json", `{"userId":`, 400, CodeMalformedJSON},
		{"unlike, empty body", "DELETE", "/v1/likes/ok", "application/json", ``, 400, CodeMalformedJSON},
		{"unlike as text/plain", "DELETE", "/v1/likes/ok", "text/plain", `{"userId":"u0"}`, 415, CodeUnsupportedMediaType},
		{"unlike of a bad videoId", "DELETE", "/v1/likes/bad%20id", "application/json", `{"userId":"u0"}`, 400, region.CodeInvalidVideoID},
		{"get likes of a bad videoId", "GET", "/v1/likes/bad%20id", "", ``, 400, region.CodeInvalidVideoID},
		{"post to a video's likes", "POST", "/v1/likes/ok", "application/json", `{"userId":"u0"}`, 405, CodeMethodNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.sideEffects()
			r := e.do(tc.method, tc.path, tc.ct, strings.NewReader(tc.body))
			wantError(t, r, tc.status, tc.code)
			if after := e.sideEffects(); after != before {
				t.Fatalf("refused request changed the node: %+v -> %+v", before, after)
			}
			if n := e.likes("ok"); n != 1 {
				t.Fatalf("refused request changed the like count to %d", n)
			}
		})
	}
}

func TestEventsBatchOfEventTypes(t *testing.T) {
	e := newEnv(t, nil)
	batch := `[
		{"videoId":"mb","userId":"u1"},
		{"videoId":"mb","userId":"u1","event":"view"},
		{"videoId":"mb","userId":"u1","event":"like"},
		{"videoId":"mb","userId":"u1","event":"like"},
		{"videoId":"mb","userId":"u2","event":"like"},
		{"videoId":"mb","userId":"u2","event":"unlike"},
		{"videoId":"mb","userId":"u3","event":"unlike"},
		{"videoId":"mb","userId":"u1","event":"share"},
		{"videoId":"mb","userId":"u1","event":"share"},
		{"videoId":"mb","userId":"u1","event":"dislike"},
		{"videoId":"mb","userId":"u1","event":"VIEW"},
		{"videoId":"mb","userId":"u1","event":"` + strings.Repeat("x", 100) + `"},
		{"videoId":"mb","userId":"u4","event":""},
		{"videoId":"mb","userId":"u5","event":"like","timestamp":` + ms(testNow) + `}
	]`
	got := decodeBatch(t, e.postEvents(strings.NewReader(batch)))
	if got.Received != 14 || got.Counted != 7 || got.Rejected != 3 {
		t.Fatalf("received/counted/rejected = %d/%d/%d, want 14/7/3: %+v", got.Received, got.Counted, got.Rejected, got)
	}
	want := []struct {
		index  int
		reason string
	}{
		{1, "duplicate"},              // a view repeated
		{3, "duplicate"},              // already liked
		{6, "duplicate"},              // nothing to take back
		{8, "duplicate"},              // a share repeated
		{9, region.CodeUnknownEvent},  //
		{10, region.CodeUnknownEvent}, // event types are case-sensitive
		{11, region.CodeUnknownEvent}, // too long to be any
	}
	if len(got.NotCounted) != len(want) {
		t.Fatalf("notCounted has %d entries, want %d: %+v", len(got.NotCounted), len(want), got.NotCounted)
	}
	for i, w := range want {
		nc := got.NotCounted[i]
		if nc.Index != w.index || nc.VideoID != "mb" || nc.Reason != w.reason {
			t.Errorf("notCounted[%d] = %+v, want index %d reason %s", i, nc, w.index, w.reason)
		}
		if (w.reason == region.CodeUnknownEvent) != (nc.Message != "") {
			t.Errorf("notCounted[%d] = %+v: a message only for input errors", i, nc)
		}
		if len(nc.Message) > 300 {
			t.Errorf("notCounted[%d]: message of %d bytes", i, len(nc.Message))
		}
	}
	if c := e.count("mb"); c != 2 {
		t.Fatalf("views %d, want 2 (u1, u4)", c)
	}
	if n := e.likes("mb"); n != 2 {
		t.Fatalf("likes %d, want 2 (u1, u5)", n)
	}
	if s := e.counts("mb", "event=share"); s.Total != 1 {
		t.Fatalf("shares %d, want 1", s.Total)
	}
	// The batch's likes are the single routes' likes.
	if got := e.like("mb", "u1"); got.Changed || got.Count != 2 {
		t.Fatalf("like again after the batch: %+v", got)
	}
	if got := e.unlike("mb", "u2"); got.Changed || got.Count != 2 {
		t.Fatalf("unlike again after the batch: %+v", got)
	}
	if got := e.unlike("mb", "u5"); !got.Changed || got.Count != 1 {
		t.Fatalf("unlike of a batch like: %+v", got)
	}
	if got := e.uniqueViewers("mb"); got.UniqueViewers != 2 {
		t.Fatalf("unique viewers %d, want 2 (likes and shares are not views)", got.UniqueViewers)
	}
}
