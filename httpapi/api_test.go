package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tallyhq/tally/region"
	"github.com/tallyhq/tally/store"
)

// ---------------------------------------------------------------------------
// Test harness
// ---------------------------------------------------------------------------

// testNow is the fixed "now" of the fake clock: a Sunday morning, mid-window.
var testNow = time.Date(2026, 11, 22, 5, 0, 0, 123_000_000, time.UTC)

// fakeClock is a settable clock for region.Config.Clock.
type fakeClock struct{ ms atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.Set(t)
	return c
}

func (c *fakeClock) Now() time.Time          { return time.UnixMilli(c.ms.Load()).UTC() }
func (c *fakeClock) Set(t time.Time)         { c.ms.Store(t.UnixMilli()) }
func (c *fakeClock) Advance(d time.Duration) { c.ms.Add(d.Milliseconds()) }

// countingObserver forwards to Metrics and counts ingested events, so a test
// can check that a refused request ingested nothing at all.
type countingObserver struct {
	*Metrics
	ingested atomic.Int64
}

func (o *countingObserver) Ingested(f store.Fate, n int) {
	o.ingested.Add(int64(n))
	o.Metrics.Ingested(f, n)
}

type testEnv struct {
	t       *testing.T
	url     string
	client  *http.Client
	node    *region.Node
	clock   *fakeClock
	obs     *countingObserver
	metrics *Metrics
	api     *Server
}

// newEnv starts an API on an in-memory node whose clock is fixed at testNow.
// mutate, if not nil, adjusts the config before the node opens.
func newEnv(t *testing.T, mutate func(*region.Config)) *testEnv {
	t.Helper()
	return newEnvWith(t, mutate, nil)
}

// newEnvWith is newEnv with the server's options adjusted by opts (if not nil).
func newEnvWith(t *testing.T, mutate func(*region.Config), opts func(*Options)) *testEnv {
	t.Helper()
	clock := newFakeClock(testNow)
	metrics := NewMetrics()
	obs := &countingObserver{Metrics: metrics}
	cfg := region.TestConfig()
	cfg.Clock = clock.Now
	cfg.Observer = obs
	if mutate != nil {
		mutate(&cfg)
	}
	node, err := region.Open(cfg)
	if err != nil {
		t.Fatalf("open node: %v", err)
	}
	t.Cleanup(func() {
		if err := node.Close(); err != nil {
			t.Errorf("close node: %v", err)
		}
	})
	o := Options{Metrics: metrics, Clock: clock.Now}
	if opts != nil {
		opts(&o)
	}
	api := New(node, o)
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	client := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64},
	}
	t.Cleanup(client.CloseIdleConnections)
	return &testEnv{t: t, url: srv.URL, client: client, node: node, clock: clock, obs: obs, metrics: metrics, api: api}
}

// response is an answer read in full.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) String() string { return fmt.Sprintf("%d %s", r.status, r.body) }

// chunked wraps a body so that the client cannot know its length and sends it
// with chunked transfer encoding.
type chunked struct{ io.Reader }

// do sends one request. body may be nil; a chunked body is sent without
// Content-Length.
func (e *testEnv) do(method, path, contentType string, body io.Reader) response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, body)
	if err != nil {
		e.t.Fatalf("new request %s %s: %v", method, path, err)
	}
	if _, ok := body.(chunked); ok {
		req.ContentLength = -1
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// postView posts body to /videos/{video}/views as JSON; video is put in the
// path verbatim (escape it yourself).
func (e *testEnv) postView(video, body string) response {
	e.t.Helper()
	return e.do(http.MethodPost, "/videos/"+video+"/views", "application/json", strings.NewReader(body))
}

// viewResult is the decoded answer of POST /videos/{id}/views.
type viewResult struct {
	VideoID   string `json:"videoId"`
	Counted   bool   `json:"counted"`
	ViewCount uint64 `json:"viewCount"`
	Reason    string `json:"reason"`
}

// view posts a view of video by user, without timestamp, and requires a 200.
func (e *testEnv) view(video, user string) viewResult {
	e.t.Helper()
	return e.viewBody(video, fmt.Sprintf(`{"userId":%q}`, user))
}

func (e *testEnv) viewBody(video, body string) viewResult {
	e.t.Helper()
	r := e.postView(video, body)
	return decodeView(e.t, r)
}

func decodeView(t testing.TB, r response) viewResult {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("POST view: got %s, want 200", r)
	}
	checkJSONContentType(t, r)
	var out viewResult
	strictDecode(t, r.body, &out)
	// viewCount must be a JSON number (an unsigned integer), never a string.
	var raw map[string]any
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
	n, ok := raw["viewCount"].(json.Number)
	if !ok {
		t.Fatalf("viewCount in %s is %T, want a JSON number", r.body, raw["viewCount"])
	}
	if _, err := strconv.ParseUint(n.String(), 10, 64); err != nil {
		t.Fatalf("viewCount %s is not an unsigned integer: %v", n, err)
	}
	if _, has := raw["reason"]; has == out.Counted {
		t.Fatalf("counted=%v but reason present=%v in %s", out.Counted, has, r.body)
	}
	return out
}

// countResult is the decoded answer of GET /videos/{id}/views.
type countResult struct {
	VideoID     string  `json:"videoId"`
	ViewCount   uint64  `json:"viewCount"`
	LastUpdated *string `json:"lastUpdated"`
}

func (e *testEnv) get(video string) countResult {
	e.t.Helper()
	r := e.do(http.MethodGet, "/videos/"+video+"/views", "", nil)
	if r.status != http.StatusOK {
		e.t.Fatalf("GET %s: got %s, want 200", video, r)
	}
	checkJSONContentType(e.t, r)
	var raw map[string]json.RawMessage
	strictDecode(e.t, r.body, &raw)
	if _, ok := raw["lastUpdated"]; !ok {
		e.t.Fatalf("GET %s: no lastUpdated in %s", video, r.body)
	}
	var out countResult
	strictDecode(e.t, r.body, &out)
	if out.VideoID != video {
		e.t.Fatalf("GET %s: videoId %q", video, out.VideoID)
	}
	return out
}

func (e *testEnv) count(video string) uint64 {
	e.t.Helper()
	return e.get(video).ViewCount
}

// sideEffects is everything a refused request must leave unchanged.
type sideEffects struct {
	ingested         int64
	counters, claims int
}

func (e *testEnv) sideEffects() sideEffects {
	st := e.node.Stats()
	return sideEffects{ingested: e.obs.ingested.Load(), counters: st.Counters, claims: st.Claims}
}

func strictDecode(t testing.TB, b []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %s into %T: %v", b, v, err)
	}
	if dec.More() {
		t.Fatalf("trailing data after JSON value in %s", b)
	}
}

func checkJSONContentType(t testing.TB, r response) {
	t.Helper()
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type %q, want application/json (body %s)", ct, r.body)
	}
}

// wantError checks r is an error answer with status and code, in the shape
// {"error":{"code":...,"message":...}} and with a message.
func wantError(t testing.TB, r response, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("got %s, want status %d code %s", r, status, code)
	}
	if r.header.Get("Content-Type") == "" && len(r.body) == 0 {
		t.Fatalf("empty error answer, want a JSON body with code %s", code)
	}
	checkJSONContentType(t, r)
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	strictDecode(t, r.body, &body)
	if body.Error.Code != code {
		t.Fatalf("error code %q, want %q (body %s)", body.Error.Code, code, r.body)
	}
	if strings.TrimSpace(body.Error.Message) == "" {
		t.Fatalf("error %s has an empty message", r.body)
	}
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// ---------------------------------------------------------------------------
// Single views: happy path
// ---------------------------------------------------------------------------

func TestViewCountedOnceThenDuplicate(t *testing.T) {
	e := newEnv(t, nil)

	got := e.view("hp", "u1")
	if got != (viewResult{VideoID: "hp", Counted: true, ViewCount: 1}) {
		t.Fatalf("first view: %+v", got)
	}
	got = e.view("hp", "u1")
	if got != (viewResult{VideoID: "hp", Counted: false, ViewCount: 1, Reason: "duplicate"}) {
		t.Fatalf("repeat view: %+v", got)
	}
	got = e.view("hp", "u2")
	if got != (viewResult{VideoID: "hp", Counted: true, ViewCount: 2}) {
		t.Fatalf("second user: %+v", got)
	}
	// The same user on another video is a different pair.
	if got := e.view("hp2", "u1"); !got.Counted || got.ViewCount != 1 {
		t.Fatalf("same user, other video: %+v", got)
	}

	c := e.get("hp")
	if c.ViewCount != 2 {
		t.Fatalf("GET count %d, want 2", c.ViewCount)
	}
	if c.LastUpdated == nil {
		t.Fatal("lastUpdated is null after views")
	}
	if !strings.HasSuffix(*c.LastUpdated, "Z") {
		t.Fatalf("lastUpdated %q is not UTC", *c.LastUpdated)
	}
	lu, err := time.Parse(time.RFC3339, *c.LastUpdated)
	if err != nil {
		t.Fatalf("lastUpdated %q is not RFC 3339: %v", *c.LastUpdated, err)
	}
	if !lu.Equal(testNow) {
		t.Fatalf("lastUpdated %v, want the clock's %v", lu, testNow)
	}
}

func TestGetNeverViewed(t *testing.T) {
	e := newEnv(t, nil)
	before := e.sideEffects()
	r := e.do(http.MethodGet, "/videos/never-seen/views", "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("got %s", r)
	}
	// lastUpdated must be present and null, not absent or "".
	var raw map[string]any
	strictDecode(t, r.body, &raw)
	if v, ok := raw["lastUpdated"]; !ok || v != nil {
		t.Fatalf("lastUpdated = %#v (present %v), want null in %s", v, ok, r.body)
	}
	if raw["viewCount"] != float64(0) || raw["videoId"] != "never-seen" {
		t.Fatalf("body %s, want videoId never-seen and viewCount 0", r.body)
	}
	// Reading an unknown video must not make the node remember it.
	if after := e.sideEffects(); after != before {
		t.Fatalf("GET of an unknown video changed the node: %+v -> %+v", before, after)
	}
}

func TestViewAcceptedInputs(t *testing.T) {
	e := newEnv(t, nil)
	long := strings.Repeat("v", region.MaxIDLen)
	for i, tc := range []struct {
		name, video, ct, body string
	}{
		{"no timestamp", "acc", "application/json", `{"userId":"a1"}`},
		{"null timestamp", "acc", "application/json", `{"userId":"a2","timestamp":null}`},
		{"unix ms now", "acc", "application/json", `{"userId":"a3","timestamp":` + ms(testNow) + `}`},
		{"unix ms an hour ago", "acc", "application/json", `{"userId":"a4","timestamp":` + ms(testNow.Add(-time.Hour)) + `}`},
		{"unix ms oldest allowed (7d)", "acc", "application/json", `{"userId":"a5","timestamp":` + ms(testNow.Add(-7*24*time.Hour)) + `}`},
		{"unix ms newest allowed (+5m skew)", "acc", "application/json", `{"userId":"a6","timestamp":` + ms(testNow.Add(5*time.Minute)) + `}`},
		{"rfc3339 Z", "acc", "application/json", `{"userId":"a7","timestamp":"2026-11-22T04:59:00Z"}`},
		{"rfc3339 offset", "acc", "application/json", `{"userId":"a8","timestamp":"2026-11-22T06:00:00+01:00"}`},
		{"rfc3339 nanos", "acc", "application/json", `{"userId":"a9","timestamp":"2026-11-21T23:00:00.123456789Z"}`},
		{"whitespace around", "acc", "application/json", " \n\t{ \"userId\" : \"a10\" }\r\n "},
		{"unknown fields ignored", "acc", "application/json", `{"userId":"a11","extra":{"x":[1,2]}}`},
		{"charset param", "acc", "application/json; charset=utf-8", `{"userId":"a12"}`},
		{"upper-case media type", "acc", "Application/JSON", `{"userId":"a13"}`},
		{"+json suffix", "acc", "application/vnd.tally+json", `{"userId":"a14"}`},
		{"all ID characters", "A-Za-z0-9_.:", "application/json", `{"userId":"azAZ09_.:-"}`},
		{"128-byte IDs", long, "application/json", `{"userId":"` + strings.Repeat("u", region.MaxIDLen) + `"}`},
		{"body exactly 4 KiB", "acc", "application/json", padTo(`{"userId":"a15"}`, MaxViewBody)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(http.MethodPost, "/videos/"+tc.video+"/views", tc.ct, strings.NewReader(tc.body))
			got := decodeView(t, r)
			if !got.Counted || got.VideoID != tc.video {
				t.Fatalf("case %d: %+v, want counted", i, got)
			}
		})
	}
	// A 4 KiB body of unknown length (chunked) is accepted too.
	r := e.do(http.MethodPost, "/videos/acc/views", "application/json", chunked{strings.NewReader(padTo(`{"userId":"a16"}`, MaxViewBody))})
	if got := decodeView(t, r); !got.Counted {
		t.Fatalf("chunked 4 KiB body: %+v", got)
	}
	if got := e.count("acc"); got != 16 {
		t.Fatalf("count %d, want 16", got)
	}
}

// padTo pads a JSON body with trailing spaces to exactly n bytes.
func padTo(body string, n int) string {
	if len(body) > n {
		panic("body longer than pad target")
	}
	return body + strings.Repeat(" ", n-len(body))
}

// A video ID of two dots is valid by the documented ID alphabet
// [A-Za-z0-9_.:-] and Go's HTTP stack does not clean the path for an
// http.Handler, so /videos/../views reaches the handler as video "..".
// (Clients that normalise dot segments per RFC 3986 cannot address it, but
// the server treats it as an opaque ID; it is not a path anywhere.)
func TestDotDotVideoIDIsOpaque(t *testing.T) {
	e := newEnv(t, nil)
	for _, v := range []string{"..", "."} {
		got := e.view(v, "u")
		if !got.Counted || got.VideoID != v {
			t.Fatalf("video %q: %+v", v, got)
		}
	}
}

// ---------------------------------------------------------------------------
// Single views: refused input
// ---------------------------------------------------------------------------

func TestViewRefusedInputs(t *testing.T) {
	e := newEnv(t, nil)
	const video = "bad" // every case that reaches a valid video uses this one
	overLimit := padTo(`{"userId":"u"}`, MaxViewBody+1)
	type tc struct {
		name    string
		method  string // default POST
		path    string // default /videos/bad/views
		ct      string // default application/json; "-" for none
		body    string
		chunked bool
		status  int
		code    string
		msg     string // substring of the error message, if set
	}
	ts := func(raw string) string { return `{"userId":"u","timestamp":` + raw + `}` }
	cases := []tc{
		// Malformed JSON.
		{name: "truncated object", body: `{"userId":"u"`, status: 400, code: CodeMalformedJSON},
		{name: "truncated after colon", body: `{"userId":`, status: 400, code: CodeMalformedJSON},
		{name: "lone brace", body: `{`, status: 400, code: CodeMalformedJSON},
		{name: "empty body", body: ``, status: 400, code: CodeMalformedJSON},
		{name: "whitespace body", body: " \n ", status: 400, code: CodeMalformedJSON},
		{name: "array", body: `[{"userId":"u"}]`, status: 400, code: CodeMalformedJSON},
		{name: "empty array", body: `[]`, status: 400, code: CodeMalformedJSON},
		{name: "string", body: `"u"`, status: 400, code: CodeMalformedJSON},
		{name: "number", body: `5`, status: 400, code: CodeMalformedJSON},
		{name: "bool", body: `true`, status: 400, code: CodeMalformedJSON},
		{name: "trailing garbage", body: `{"userId":"u"} x`, status: 400, code: CodeMalformedJSON},
		{name: "two objects", body: `{"userId":"u"}{"userId":"u"}`, status: 400, code: CodeMalformedJSON},
		{name: "two objects spaced", body: `{"userId":"u"} {}`, status: 400, code: CodeMalformedJSON},
		{name: "trailing comma", body: `{"userId":"u",}`, status: 400, code: CodeMalformedJSON},
		{name: "single quotes", body: `{'userId':'u'}`, status: 400, code: CodeMalformedJSON},
		{name: "unquoted key", body: `{userId:"u"}`, status: 400, code: CodeMalformedJSON},
		{name: "userId number", body: `{"userId":5}`, status: 400, code: CodeMalformedJSON},
		{name: "userId bool", body: `{"userId":true}`, status: 400, code: CodeMalformedJSON},
		{name: "userId array", body: `{"userId":["u"]}`, status: 400, code: CodeMalformedJSON},
		{name: "userId object", body: `{"userId":{"id":"u"}}`, status: 400, code: CodeMalformedJSON},
		{name: "bad escape", body: `{"userId":"\q"}`, status: 400, code: CodeMalformedJSON},

		// Content type.
		{name: "no content type", ct: "-", body: `{"userId":"u"}`, status: 415, code: CodeUnsupportedMediaType},
		{name: "text/plain", ct: "text/plain", body: `{"userId":"u"}`, status: 415, code: CodeUnsupportedMediaType},
		{name: "form", ct: "application/x-www-form-urlencoded", body: `userId=u`, status: 415, code: CodeUnsupportedMediaType},
		{name: "multipart", ct: "multipart/form-data; boundary=x", body: `{"userId":"u"}`, status: 415, code: CodeUnsupportedMediaType},
		{name: "application/jsonx", ct: "application/jsonx", body: `{"userId":"u"}`, status: 415, code: CodeUnsupportedMediaType},
		{name: "bare json", ct: "json", body: `{"userId":"u"}`, status: 415, code: CodeUnsupportedMediaType},
		{name: "unparsable media type", ct: "application/json; charset", body: `{"userId":"u"}`, status: 415, code: CodeUnsupportedMediaType},

		// Body size: a valid view padded over the limit must not count.
		// With a Content-Length the server refuses before reading ("body of N
		// bytes"); without one it stops reading at the limit ("larger than").
		{name: "4 KiB + 1 with length", body: overLimit, status: 413, code: CodeBodyTooLarge, msg: "body of 4097 bytes"},
		{name: "4 KiB + 1 chunked", body: overLimit, chunked: true, status: 413, code: CodeBodyTooLarge, msg: "larger than 4096"},
		{name: "1 MiB with length", body: padTo(`{"userId":"u"}`, 1<<20), status: 413, code: CodeBodyTooLarge, msg: "body of 1048576 bytes"},
		{name: "1 MiB chunked", body: padTo(`{"userId":"u"}`, 1<<20), chunked: true, status: 413, code: CodeBodyTooLarge, msg: "larger than 4096"},

		// Video IDs. The router matches an empty segment, so an empty ID is a
		// 400 from validation rather than a 404.
		{name: "empty video", path: "/videos//views", body: `{"userId":"u"}`, status: 400, code: region.CodeInvalidVideoID},
		{name: "129-byte video", path: "/videos/" + strings.Repeat("v", region.MaxIDLen+1) + "/views", body: `{"userId":"u"}`, status: 400, code: region.CodeInvalidVideoID},
		{name: "video with space", path: "/videos/a%20b/views", body: `{"userId":"u"}`, status: 400, code: region.CodeInvalidVideoID},
		{name: "video with plus", path: "/videos/a+b/views", body: `{"userId":"u"}`, status: 400, code: region.CodeInvalidVideoID},
		{name: "unicode video", path: "/videos/%C3%BC/views", body: `{"userId":"u"}`, status: 400, code: region.CodeInvalidVideoID},
		{name: "raw unicode video", path: "/videos/ü/views", body: `{"userId":"u"}`, status: 400, code: region.CodeInvalidVideoID},
		{name: "encoded slash video", path: "/videos/a%2Fb/views", body: `{"userId":"u"}`, status: 400, code: region.CodeInvalidVideoID},
		{name: "NUL in video", path: "/videos/a%00b/views", body: `{"userId":"u"}`, status: 400, code: region.CodeInvalidVideoID},
		{name: "star video", path: "/videos/a*b/views", body: `{"userId":"u"}`, status: 400, code: region.CodeInvalidVideoID},
		// A bad video ID is reported before a bad body.
		{name: "bad video and bad body", path: "/videos/a%20b/views", body: `{`, status: 400, code: region.CodeInvalidVideoID},

		// User IDs.
		{name: "no userId", body: `{}`, status: 400, code: region.CodeInvalidUserID},
		{name: "only timestamp", body: `{"timestamp":` + ms(testNow) + `}`, status: 400, code: region.CodeInvalidUserID},
		{name: "null userId", body: `{"userId":null}`, status: 400, code: region.CodeInvalidUserID},
		// JSON null decodes as an empty request, so it is "userId missing"
		// rather than malformed JSON.
		{name: "null body", body: `null`, status: 400, code: region.CodeInvalidUserID},
		{name: "empty userId", body: `{"userId":""}`, status: 400, code: region.CodeInvalidUserID},
		{name: "129-byte userId", body: `{"userId":"` + strings.Repeat("u", region.MaxIDLen+1) + `"}`, status: 400, code: region.CodeInvalidUserID},
		{name: "userId with space", body: `{"userId":"a b"}`, status: 400, code: region.CodeInvalidUserID},
		{name: "userId with slash", body: `{"userId":"a/b"}`, status: 400, code: region.CodeInvalidUserID},
		{name: "unicode userId", body: `{"userId":"ü"}`, status: 400, code: region.CodeInvalidUserID},
		{name: "escaped unicode userId", body: `{"userId":"\u00fc"}`, status: 400, code: region.CodeInvalidUserID},
		{name: "NUL userId", body: `{"userId":"u\u0000"}`, status: 400, code: region.CodeInvalidUserID},
		{name: "invalid UTF-8 userId", body: "{\"userId\":\"u\xff\"}", status: 400, code: region.CodeInvalidUserID},
		{name: "userId with newline", body: `{"userId":"u\n"}`, status: 400, code: region.CodeInvalidUserID},

		// Timestamps.
		{name: "ts zero", body: ts(`0`), status: 400, code: region.CodeInvalidTimestamp},
		{name: "ts negative", body: ts(`-1`), status: 400, code: region.CodeInvalidTimestamp},
		{name: "ts min int64", body: ts(`-9223372036854775808`), status: 400, code: region.CodeInvalidTimestamp},
		{name: "ts seconds not ms", body: ts(strconv.FormatInt(testNow.Unix(), 10)), status: 400, code: region.CodeInvalidTimestamp},
		{name: "ts 1732250000", body: ts(`1732250000`), status: 400, code: region.CodeInvalidTimestamp},
		{name: "ts year 3000 ms", body: ts(`32503680000000`), status: 400, code: region.CodeInvalidTimestamp},
		{name: "ts year 3000 string", body: ts(`"3000-01-01T00:00:00Z"`), status: 400, code: region.CodeInvalidTimestamp},
		{name: "ts max int64", body: ts(`9223372036854775807`), status: 400, code: region.CodeInvalidTimestamp},
		{name: "ts overflows int64", body: ts(`9223372036854775808`), status: 400, code: region.CodeInvalidTimestamp},
		{name: "ts huge", body: ts(strings.Repeat("9", 60)), status: 400, code: region.CodeInvalidTimestamp},
		{name: "ts float", body: ts(`1.5`), status: 400, code: region.CodeInvalidTimestamp},
		{name: "ts float ms", body: ts(ms(testNow) + `.0`), status: 400, code: region.CodeInvalidTimestamp},
		{name: "ts exponent", body: ts(`1.7e12`), status: 400, code: region.CodeInvalidTimestamp},
		{name: "ts yesterday", body: ts(`"yesterday"`), status: 400, code: region.CodeInvalidTimestamp},
		{name: "ts empty string", body: ts(`""`), status: 400, code: region.CodeInvalidTimestamp},
		{name: "ts date only", body: ts(`"2026-11-22"`), status: 400, code: region.CodeInvalidTimestamp},
		{name: "ts no zone", body: ts(`"2026-11-22T05:00:00"`), status: 400, code: region.CodeInvalidTimestamp},
		{name: "ts ms as string", body: ts(`"` + ms(testNow) + `"`), status: 400, code: region.CodeInvalidTimestamp},
		{name: "ts bool", body: ts(`true`), status: 400, code: region.CodeInvalidTimestamp},
		{name: "ts object", body: ts(`{}`), status: 400, code: region.CodeInvalidTimestamp},
		{name: "ts array", body: ts(`[1]`), status: 400, code: region.CodeInvalidTimestamp},
		{name: "ts 1ms too old", body: ts(ms(testNow.Add(-7*24*time.Hour - time.Millisecond))), status: 400, code: region.CodeInvalidTimestamp},
		{name: "ts 1ms too new", body: ts(ms(testNow.Add(5*time.Minute + time.Millisecond))), status: 400, code: region.CodeInvalidTimestamp},
		{name: "ts a month ago string", body: ts(`"2026-10-22T05:00:00Z"`), status: 400, code: region.CodeInvalidTimestamp},

		// Routing.
		{name: "unknown route", method: "GET", path: "/nope", ct: "-", status: 404, code: CodeNotFound},
		{name: "post to the dashboard", path: "/", body: `{"userId":"u"}`, status: 405, code: CodeMethodNotAllowed},
		{name: "video without views", method: "GET", path: "/videos/bad", ct: "-", status: 404, code: CodeNotFound},
		{name: "post video without views", path: "/videos/bad", body: `{"userId":"u"}`, status: 404, code: CodeNotFound},
		{name: "trailing slash", path: "/videos/bad/views/", body: `{"userId":"u"}`, status: 404, code: CodeNotFound},
		{name: "extra segment", path: "/videos/bad/views/x", body: `{"userId":"u"}`, status: 404, code: CodeNotFound},
		{name: "singular event route", path: "/v1/event", body: `[{"videoId":"bad","userId":"u"}]`, status: 404, code: CodeNotFound},
		{name: "upper-case route", path: "/VIDEOS/bad/views", body: `{"userId":"u"}`, status: 404, code: CodeNotFound},
		{name: "DELETE views", method: "DELETE", body: `{"userId":"u"}`, status: 405, code: CodeMethodNotAllowed},
		{name: "PUT views", method: "PUT", body: `{"userId":"u"}`, status: 405, code: CodeMethodNotAllowed},
		{name: "PATCH views", method: "PATCH", body: `{"userId":"u"}`, status: 405, code: CodeMethodNotAllowed},
		{name: "GET events", method: "GET", path: "/v1/events", ct: "-", status: 405, code: CodeMethodNotAllowed},
		{name: "PUT events", method: "PUT", path: "/v1/events", body: `[{"videoId":"bad","userId":"u"}]`, status: 405, code: CodeMethodNotAllowed},
		{name: "POST healthz", method: "POST", path: "/healthz", body: `{}`, status: 405, code: CodeMethodNotAllowed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			method, path, ct := c.method, c.path, c.ct
			if method == "" {
				method = http.MethodPost
			}
			if path == "" {
				path = "/videos/" + video + "/views"
			}
			switch ct {
			case "":
				ct = "application/json"
			case "-":
				ct = ""
			}
			var body io.Reader
			if c.body != "" || method == http.MethodPost {
				body = strings.NewReader(c.body)
				if c.chunked {
					body = chunked{body}
				}
			}
			before, beforeCount := e.sideEffects(), e.count(video)
			r := e.do(method, path, ct, body)
			wantError(t, r, c.status, c.code)
			if c.msg != "" && !strings.Contains(string(r.body), c.msg) {
				t.Errorf("error %s lacks %q", r.body, c.msg)
			}
			if c.status == http.StatusMethodNotAllowed && r.header.Get("Allow") == "" {
				t.Errorf("405 without an Allow header")
			}
			if after := e.sideEffects(); after != before {
				t.Fatalf("refused request changed the node: %+v -> %+v", before, after)
			}
			if got := e.count(video); got != beforeCount {
				t.Fatalf("video %s went from %d to %d views on a refused request", video, beforeCount, got)
			}
		})
	}
	// None of the refused requests claimed (bad, u): the first valid view counts.
	if got := e.view(video, "u"); !got.Counted || got.ViewCount != 1 {
		t.Fatalf("first valid view after refused ones: %+v, want counted with count 1", got)
	}
}

func TestGetRefusesInvalidVideoID(t *testing.T) {
	e := newEnv(t, nil)
	for _, path := range []string{
		"/videos//views",
		"/videos/a%20b/views",
		"/videos/" + strings.Repeat("v", region.MaxIDLen+1) + "/views",
		"/videos/%C3%BC/views",
	} {
		r := e.do(http.MethodGet, path, "", nil)
		wantError(t, r, http.StatusBadRequest, region.CodeInvalidVideoID)
	}
}

// A client that percent-encodes a valid ID character in the path (JavaScript's
// encodeURIComponent turns ':' into %3A) addresses the same video.
func TestPercentEncodedVideoID(t *testing.T) {
	e := newEnv(t, nil)
	r := e.postView("a%3Ab", `{"userId":"u"}`)
	got := decodeView(t, r)
	if !got.Counted || got.VideoID != "a:b" {
		t.Fatalf("%+v, want video a:b counted", got)
	}
	if c := e.count("a:b"); c != 1 {
		t.Fatalf("count of a:b = %d, want 1", c)
	}
	if got := e.postView("a%3ab", `{"userId":"u"}`); decodeView(t, got).Counted {
		t.Fatalf("lower-case escape of the same video counted twice")
	}
}

// ---------------------------------------------------------------------------
// Batch ingest: POST /v1/events
// ---------------------------------------------------------------------------

type batchResult struct {
	Received   int `json:"received"`
	Counted    int `json:"counted"`
	Rejected   int `json:"rejected"`
	NotCounted []struct {
		Index   int    `json:"index"`
		VideoID string `json:"videoId"`
		Reason  string `json:"reason"`
		Message string `json:"message"`
	} `json:"notCounted"`
}

func (e *testEnv) postEvents(body io.Reader) response {
	e.t.Helper()
	return e.do(http.MethodPost, "/v1/events", "application/json", body)
}

func decodeBatch(t testing.TB, r response) batchResult {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("POST /v1/events: got %s, want 200", r)
	}
	checkJSONContentType(t, r)
	var out batchResult
	strictDecode(t, r.body, &out)
	if out.NotCounted == nil {
		t.Fatalf("notCounted is null or absent in %s, want an array", r.body)
	}
	return out
}

func TestEventsMixedBatch(t *testing.T) {
	e := newEnv(t, nil)
	if got := e.view("vb", "u1"); !got.Counted {
		t.Fatalf("setup view: %+v", got)
	}
	batch := `[
		{"videoId":"vb","userId":"u2"},
		{"videoId":"vb","userId":"u2"},
		{"videoId":"vb","userId":"u1"},
		{"videoId":"bad id","userId":"u3"},
		{"videoId":"vb","userId":""},
		{"videoId":"vb","userId":"u4","timestamp":"yesterday"},
		{"videoId":"vb2","userId":"u5","timestamp":` + ms(testNow.Add(-time.Minute)) + `},
		{"videoId":"vb","userId":"u6","timestamp":5},
		{"userId":"u7"},
		{"videoId":"vb2","userId":"u5","timestamp":"2026-11-22T04:00:00Z"},
		{"videoId":"vb2","userId":"u8","timestamp":"2026-11-22T04:00:00Z"},
		{"videoId":"vb","userId":"u9","timestamp":32503680000000}
	]`
	got := decodeBatch(t, e.postEvents(strings.NewReader(batch)))
	if got.Received != 12 || got.Counted != 3 || got.Rejected != 6 {
		t.Fatalf("received/counted/rejected = %d/%d/%d, want 12/3/6: %+v", got.Received, got.Counted, got.Rejected, got)
	}
	want := []struct {
		index         int
		video, reason string
	}{
		{1, "vb", "duplicate"},                   // repeat within the batch
		{2, "vb", "duplicate"},                   // repeat of the earlier single POST
		{3, "bad id", region.CodeInvalidVideoID}, //
		{4, "vb", region.CodeInvalidUserID},      //
		{5, "vb", region.CodeInvalidTimestamp},   // unparsable (refused before the node)
		{7, "vb", region.CodeInvalidTimestamp},   // too old (refused by the node)
		{8, "", region.CodeInvalidVideoID},       // missing videoId
		{9, "vb2", "duplicate"},                  //
		{11, "vb", region.CodeInvalidTimestamp},  // year 3000
	}
	if len(got.NotCounted) != len(want) {
		t.Fatalf("notCounted has %d entries, want %d: %+v", len(got.NotCounted), len(want), got.NotCounted)
	}
	for i, w := range want {
		nc := got.NotCounted[i]
		if nc.Index != w.index || nc.VideoID != w.video || nc.Reason != w.reason {
			t.Errorf("notCounted[%d] = %+v, want index %d video %q reason %s", i, nc, w.index, w.video, w.reason)
		}
		isInput := strings.HasPrefix(w.reason, "invalid_")
		if isInput && nc.Message == "" {
			t.Errorf("notCounted[%d] (%s) has no message", i, w.reason)
		}
		if !isInput && nc.Message != "" {
			t.Errorf("notCounted[%d] (%s) has message %q", i, w.reason, nc.Message)
		}
	}
	if c := e.count("vb"); c != 2 {
		t.Fatalf("vb count %d, want 2 (u1, u2)", c)
	}
	if c := e.count("vb2"); c != 2 {
		t.Fatalf("vb2 count %d, want 2 (u5, u8)", c)
	}
	// The metrics count every event the node took by its fate: the setup
	// view and the batch's (refused events are not ingested).
	expectMetrics(t, scrape(t, e), `tally_ingest_events_total{fate="counted"} 4`, `tally_ingest_events_total{fate="duplicate"} 3`)
	// The batch claimed its pairs: a single POST of one is now a duplicate.
	if v := e.view("vb2", "u8"); v.Counted || v.Reason != "duplicate" || v.ViewCount != 2 {
		t.Fatalf("repeat of a batch view: %+v", v)
	}
	// Refused events claimed nothing.
	if v := e.view("vb", "u6"); !v.Counted || v.ViewCount != 3 {
		t.Fatalf("view by the user whose batch event was refused: %+v", v)
	}
}

func TestEventsEmptyBatch(t *testing.T) {
	e := newEnv(t, nil)
	for _, body := range []string{`[]`, " \n[ ]\n "} {
		r := e.postEvents(strings.NewReader(body))
		if got := decodeBatch(t, r); got.Received != 0 || got.Counted != 0 || got.Rejected != 0 || len(got.NotCounted) != 0 {
			t.Fatalf("empty batch %q: %s", body, r.body)
		}
		if !strings.Contains(string(r.body), `"notCounted":[]`) {
			t.Fatalf("empty batch: notCounted should be [] in %s", r.body)
		}
	}
}

func TestEventsRefusedBatches(t *testing.T) {
	e := newEnv(t, nil)
	one := `{"videoId":"eb","userId":"u"}`
	overBody := `[` + one + strings.Repeat(" ", MaxBatchBody) + `]`
	for _, tc := range []struct {
		name, ct, body string
		chunked        bool
		status         int
		code           string
	}{
		{"object not array", "application/json", one, false, 400, CodeMalformedJSON},
		{"null", "application/json", `null`, false, 400, CodeMalformedJSON},
		{"string", "application/json", `"[]"`, false, 400, CodeMalformedJSON},
		{"empty body", "application/json", ``, false, 400, CodeMalformedJSON},
		{"truncated", "application/json", `[` + one, false, 400, CodeMalformedJSON},
		{"trailing garbage", "application/json", `[` + one + `] x`, false, 400, CodeMalformedJSON},
		{"two arrays", "application/json", `[` + one + `][]`, false, 400, CodeMalformedJSON},
		{"array of numbers", "application/json", `[1,2]`, false, 400, CodeMalformedJSON},
		{"wrong field type", "application/json", `[` + one + `,{"videoId":5,"userId":"u2"}]`, false, 400, CodeMalformedJSON},
		{"text/plain", "text/plain", `[` + one + `]`, false, 415, CodeUnsupportedMediaType},
		{"no content type", "", `[` + one + `]`, false, 415, CodeUnsupportedMediaType},
		{"over 5 MiB with length", "application/json", overBody, false, 413, CodeBodyTooLarge},
		{"over 5 MiB chunked", "application/json", overBody, true, 413, CodeBodyTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				body = chunked{body}
			}
			before := e.sideEffects()
			r := e.do(http.MethodPost, "/v1/events", tc.ct, body)
			wantError(t, r, tc.status, tc.code)
			if after := e.sideEffects(); after != before {
				t.Fatalf("refused batch changed the node: %+v -> %+v", before, after)
			}
			if c := e.count("eb"); c != 0 {
				t.Fatalf("refused batch counted %d views", c)
			}
		})
	}
}

func batchOf(n int, video string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"videoId":%q,"userId":"user-%d"}`, video, i)
	}
	b.WriteByte(']')
	return b.String()
}

func TestEventsBatchSizeLimit(t *testing.T) {
	e := newEnv(t, nil)
	before := e.sideEffects()
	r := e.postEvents(strings.NewReader(batchOf(MaxBatchEvents+1, "many")))
	wantError(t, r, http.StatusRequestEntityTooLarge, CodeTooManyEvents)
	if after := e.sideEffects(); after != before {
		t.Fatalf("refused batch changed the node: %+v -> %+v", before, after)
	}
	if c := e.count("many"); c != 0 {
		t.Fatalf("a refused batch of %d counted %d views", MaxBatchEvents+1, c)
	}

	// Exactly the limit is accepted, and fits the body limit.
	body := batchOf(MaxBatchEvents, "many")
	if len(body) > MaxBatchBody {
		t.Fatalf("a batch of %d small events is %d bytes, over the %d body limit", MaxBatchEvents, len(body), MaxBatchBody)
	}
	got := decodeBatch(t, e.postEvents(strings.NewReader(body)))
	if got.Received != MaxBatchEvents || got.Counted != MaxBatchEvents || got.Rejected != 0 || len(got.NotCounted) != 0 {
		t.Fatalf("batch of %d: received %d counted %d rejected %d notCounted %d",
			MaxBatchEvents, got.Received, got.Counted, got.Rejected, len(got.NotCounted))
	}
	if c := e.count("many"); c != MaxBatchEvents {
		t.Fatalf("count %d, want %d", c, MaxBatchEvents)
	}
}

// ---------------------------------------------------------------------------
// Rate limiting and the dedup window (fake clock)
// ---------------------------------------------------------------------------

func TestRateLimitedViewsAreNotCountedOrClaimed(t *testing.T) {
	e := newEnv(t, func(c *region.Config) { c.UserRate, c.UserBurst = 1, 2 })

	for _, v := range []string{"rl1", "rl2"} {
		if got := e.view(v, "u"); !got.Counted {
			t.Fatalf("view %d of the burst: %+v", 1, got)
		}
	}
	got := e.view("rl3", "u")
	if got != (viewResult{VideoID: "rl3", Counted: false, ViewCount: 0, Reason: "rate_limited"}) {
		t.Fatalf("third view in a burst of 2: %+v, want rate_limited", got)
	}
	if c := e.count("rl3"); c != 0 {
		t.Fatalf("rate-limited view counted: %d", c)
	}
	// The limit is per user.
	if got := e.view("rl3", "other"); !got.Counted || got.ViewCount != 1 {
		t.Fatalf("another user: %+v", got)
	}
	// Still limited without time passing.
	if got := e.view("rl3", "u"); got.Reason != "rate_limited" {
		t.Fatalf("retry at the same instant: %+v", got)
	}
	// One second refills one token; the limited view took no dedup claim, so
	// its retry counts.
	e.clock.Advance(time.Second)
	if got := e.view("rl3", "u"); !got.Counted || got.ViewCount != 2 {
		t.Fatalf("retry after 1s: %+v, want counted (count 2)", got)
	}
	if got := e.view("rl4", "u"); got.Reason != "rate_limited" {
		t.Fatalf("next view after the refill was spent: %+v", got)
	}

	// Batches are limited per event.
	b := decodeBatch(t, e.postEvents(strings.NewReader(
		`[{"videoId":"rb1","userId":"w"},{"videoId":"rb2","userId":"w"},{"videoId":"rb3","userId":"w"}]`)))
	if b.Counted != 2 || b.Rejected != 0 || len(b.NotCounted) != 1 ||
		b.NotCounted[0].Index != 2 || b.NotCounted[0].Reason != "rate_limited" || b.NotCounted[0].VideoID != "rb3" {
		t.Fatalf("batch over the burst: %+v", b)
	}
	if c := e.count("rb3"); c != 0 {
		t.Fatalf("rate-limited batch event counted: %d", c)
	}
}

func TestDedupWindowIsTheUTCDay(t *testing.T) {
	lastMs := time.Date(2026, 11, 22, 23, 59, 59, 999_000_000, time.UTC) // last ms of testNow's day
	e := newEnv(t, nil)
	clk := e.clock
	clk.Set(lastMs.Add(-12 * time.Hour))
	step := func(what string, wantCounted bool, wantCount uint64) {
		t.Helper()
		got := e.view("dw", "u")
		if got.Counted != wantCounted || got.ViewCount != wantCount {
			t.Fatalf("%s (clock %s): %+v, want counted=%v count=%d", what, clk.Now().Format(time.RFC3339Nano), got, wantCounted, wantCount)
		}
		if !wantCounted && got.Reason != "duplicate" {
			t.Fatalf("%s: reason %q, want duplicate", what, got.Reason)
		}
	}
	step("first view, noon", true, 1)
	clk.Set(lastMs)
	step("same day 23:59:59.999", false, 1)
	clk.Advance(time.Millisecond)
	step("next day 00:00:00.000", true, 2)
	step("repeat next day", false, 2)
	clk.Advance(24*time.Hour - time.Millisecond)
	step("end of next day", false, 2)
	clk.Advance(24 * time.Hour)
	step("a day later", true, 3)
	// Another user is unaffected by the windows of the first.
	if got := e.view("dw", "u2"); !got.Counted || got.ViewCount != 4 {
		t.Fatalf("second user: %+v", got)
	}
}

// ---------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------

func TestConcurrentViewsCountEachUserOnce(t *testing.T) {
	e := newEnv(t, nil)
	const (
		workers  = 50
		perWork  = 20
		distinct = 600 // users 0..399 are sent twice, 400..599 once
	)
	var counted, dups atomic.Int64
	var maxSeen atomic.Uint64
	stop := make(chan struct{})
	readerDone := make(chan error, 1)
	// A reader watches the count while writers run: it must never go down or
	// past the number of distinct users.
	go func() {
		var last uint64
		for {
			select {
			case <-stop:
				readerDone <- nil
				return
			default:
			}
			req, _ := http.NewRequest(http.MethodGet, e.url+"/videos/hot/views", nil)
			resp, err := e.client.Do(req)
			if err != nil {
				readerDone <- err
				return
			}
			var c countResult
			err = json.NewDecoder(resp.Body).Decode(&c)
			resp.Body.Close()
			if err != nil {
				readerDone <- err
				return
			}
			if c.ViewCount < last || c.ViewCount > distinct {
				readerDone <- fmt.Errorf("count went %d -> %d", last, c.ViewCount)
				return
			}
			last = c.ViewCount
			maxSeen.Store(last)
		}
	}()

	var wg sync.WaitGroup
	errs := make(chan error, workers*perWork)
	for w := range workers {
		wg.Go(func() {
			for i := range perWork {
				user := fmt.Sprintf("user-%d", (w*perWork+i)%distinct)
				body := fmt.Sprintf(`{"userId":%q}`, user)
				req, _ := http.NewRequest(http.MethodPost, e.url+"/videos/hot/views", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := e.client.Do(req)
				if err != nil {
					errs <- err
					continue
				}
				var v viewResult
				err = json.NewDecoder(resp.Body).Decode(&v)
				resp.Body.Close()
				switch {
				case err != nil || resp.StatusCode != http.StatusOK:
					errs <- fmt.Errorf("user %s: status %d, decode err %v", user, resp.StatusCode, err)
				case v.Counted:
					counted.Add(1)
				case v.Reason == "duplicate":
					dups.Add(1)
				default:
					errs <- fmt.Errorf("user %s: not counted for %q", user, v.Reason)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	if err := <-readerDone; err != nil {
		t.Errorf("reader: %v", err)
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if counted.Load() != distinct || dups.Load() != workers*perWork-distinct {
		t.Fatalf("counted %d duplicates %d, want %d and %d", counted.Load(), dups.Load(), distinct, workers*perWork-distinct)
	}
	if c := e.count("hot"); c != distinct {
		t.Fatalf("final count %d, want %d distinct users", c, distinct)
	}
}

// Many concurrent copies of one view: exactly one counts, and every duplicate
// answers with the count that includes the one that did (it waits for it to
// be durable).
func TestConcurrentSamePairCountsOnce(t *testing.T) {
	e := newEnv(t, nil)
	const n = 32
	start := make(chan struct{})
	results := make(chan viewResult, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			<-start
			req, _ := http.NewRequest(http.MethodPost, e.url+"/videos/same/views", strings.NewReader(`{"userId":"one"}`))
			req.Header.Set("Content-Type", "application/json")
			resp, err := e.client.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			var v viewResult
			if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != 200 {
				errs <- fmt.Errorf("status %d, decode %v", resp.StatusCode, err)
				return
			}
			results <- v
		})
	}
	close(start)
	wg.Wait()
	close(results)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var counted int
	for v := range results {
		if v.Counted {
			counted++
		} else if v.Reason != "duplicate" {
			t.Errorf("not counted for %q", v.Reason)
		}
		if v.ViewCount != 1 {
			t.Errorf("answer with viewCount %d, want 1: %+v", v.ViewCount, v)
		}
	}
	if counted != 1 {
		t.Fatalf("%d of %d concurrent copies counted, want exactly 1", counted, n)
	}
	if c := e.count("same"); c != 1 {
		t.Fatalf("count %d, want 1", c)
	}
}

// ---------------------------------------------------------------------------
// Operations endpoints
// ---------------------------------------------------------------------------

func TestHealthReadyMetrics(t *testing.T) {
	e := newEnv(t, nil)
	for path, want := range map[string]string{"/healthz": `{"status":"ok"}`, "/readyz": `{"status":"ready","reason":"single node, state loaded"}`} {
		r := e.do(http.MethodGet, path, "", nil)
		if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != want {
			t.Fatalf("GET %s: %s, want 200 %s", path, r, want)
		}
	}

	e.view("m1", "u")                      // counted
	e.view("m1", "u")                      // duplicate
	e.do(http.MethodGet, "/nope", "", nil) // 404
	text := scrape(t, e)
	expectMetrics(t, text,
		`tally_http_requests_total{code="200",method="POST",route="/videos/:videoId/views"} 2`,
		`tally_http_requests_total{code="404",method="GET",`,
		"tally_group_commit_fsync_seconds_bucket",
		"tally_group_commit_fsync_seconds_count",
		"tally_counters_in_memory 4", // the view count and its minute, hour and day buckets
		"tally_counters_evicted_total 0",
		`tally_ingest_events_total{fate="counted"} 1`,
		`tally_ingest_events_total{fate="duplicate"} 1`,
		`tally_ingest_events_total{fate="rate_limited"} 0`,
		"tally_ready 1",
		"go_goroutines",
	)
	// Labels use the route template, never the raw path.
	if strings.Contains(text, `route="/videos/m1/views"`) || strings.Contains(text, `route="/nope"`) {
		t.Errorf("/metrics has a raw path as a route label")
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", text)
	}
}

func TestClosedNodeAnswers503(t *testing.T) {
	e := newEnv(t, nil)
	if err := e.node.Close(); err != nil {
		t.Fatal(err)
	}
	r := e.postView("closed", `{"userId":"u"}`)
	wantError(t, r, http.StatusServiceUnavailable, CodeUnavailable)
	if r.header.Get("Retry-After") == "" {
		t.Fatalf("503 without Retry-After")
	}
	r = e.postEvents(strings.NewReader(`[{"videoId":"closed","userId":"u"}]`))
	wantError(t, r, http.StatusServiceUnavailable, CodeUnavailable)
}
