package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
)

// logLines decodes the JSON log lines of logs.
func logLines(t *testing.T, logs string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

// TestPanicAnswers500: a handler's panic is answered as echo's Recover
// middleware had it answered, 500 with the internal code and the panic's
// text; the request is counted under its route with code 500, the panic is
// logged with the request's ID and the handler's stack, and the server goes
// on answering.
func TestPanicAnswers500(t *testing.T) {
	var logs syncBuffer
	e := newEnvWith(t, nil, func(o *Options) {
		o.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	e.api.e.GET("/test/panic", func(echo.Context) error { panic("boom") })
	e.api.e.GET("/test/panic-error", func(echo.Context) error { panic(errors.New("bad state")) })
	e.api.e.GET("/test/panic-input", func(echo.Context) error {
		panic(errf(http.StatusBadRequest, CodeMalformedJSON, "thrown"))
	})

	for _, tc := range []struct {
		path   string
		status int
		body   string
	}{
		{"/test/panic", 500, `{"error":{"code":"internal","message":"boom"}}`},
		{"/test/panic-error", 500, `{"error":{"code":"internal","message":"bad state"}}`},
		{"/test/panic-input", 400, `{"error":{"code":"malformed_json","message":"thrown"}}`},
		{"/test/panic", 500, `{"error":{"code":"internal","message":"boom"}}`},
	} {
		r := e.do(http.MethodGet, tc.path, "", nil)
		if r.status != tc.status || string(r.body) != tc.body+"\n" {
			t.Errorf("GET %s: %s, want %d %s", tc.path, r, tc.status, tc.body)
		}
		checkJSONContentType(t, r)
		if r.header.Get(HeaderRequestID) == "" {
			t.Errorf("GET %s: no %s", tc.path, HeaderRequestID)
		}
	}
	// The server still answers.
	if v := e.view("after-panic", "u"); !v.Counted {
		t.Fatalf("view after the panics: %+v", v)
	}

	text := scrape(t, e)
	expectMetrics(t, text,
		`tally_http_requests_total{code="500",method="GET",route="/test/panic"} 2`,
		`tally_http_requests_total{code="500",method="GET",route="/test/panic-error"} 1`,
		`tally_http_requests_total{code="400",method="GET",route="/test/panic-input"} 1`,
		`tally_http_request_duration_seconds_count{method="GET",route="/test/panic"} 2`,
		"tally_http_requests_in_flight 1", // the scrape itself
	)

	panics, failed := 0, 0
	for _, rec := range logLines(t, logs.String()) {
		switch rec["msg"] {
		case "handler panicked":
			panics++
			if id, _ := rec["request_id"].(string); id == "" {
				t.Errorf("panic logged without request_id: %v", rec)
			}
			if st, _ := rec["stack"].(string); !strings.Contains(st, "TestPanicAnswers500") {
				t.Errorf("panic logged without the handler's stack: %v", rec)
			}
		case "request failed":
			failed++
			if id, _ := rec["request_id"].(string); id == "" {
				t.Errorf("failure logged without request_id: %v", rec)
			}
		}
	}
	if panics != 4 || failed != 3 { // the 400 is not logged as a failure
		t.Errorf("%d panics and %d failures logged, want 4 and 3; logs:\n%s", panics, failed, logs.String())
	}
}

// TestPanicAbortHandler: http.ErrAbortHandler still aborts the answer, as
// net/http means it to, and the server goes on answering.
func TestPanicAbortHandler(t *testing.T) {
	e := newEnv(t, nil)
	e.api.e.GET("/test/abort", func(echo.Context) error { panic(http.ErrAbortHandler) })
	req, err := http.NewRequest(http.MethodGet, e.url+"/test/abort", nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := e.client.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("aborted answer arrived: %d", resp.StatusCode)
	}
	if v := e.view("after-abort", "u"); !v.Counted {
		t.Fatalf("view after the abort: %+v", v)
	}
}

// TestRequestMetricsLabels: every request is counted once by route
// template, method and status, unmatched ones included, and carries an ID.
func TestRequestMetricsLabels(t *testing.T) {
	e := newEnv(t, nil)
	e.view("lab", "u1")
	e.view("lab", "u1")
	e.do(http.MethodGet, "/videos/lab/views", "", nil)
	e.do(http.MethodGet, "/videos/lab/views?pretty", "", nil)
	e.do(http.MethodPost, "/videos/lab/views", "text/plain", strings.NewReader(`{"userId":"u"}`))
	e.do(http.MethodGet, "/no/such/route", "", nil)
	// Methods of the client's own making are one label value, however many.
	for i := range 5 {
		e.do(fmt.Sprintf("BREW%d", i), "/no/such/route", "", nil)
	}
	r := e.do(http.MethodPut, "/videos/lab/views", "", nil)
	if r.status != http.StatusMethodNotAllowed || r.header.Get(HeaderRequestID) == "" {
		t.Fatalf("PUT: %s, %s %q", r, HeaderRequestID, r.header.Get(HeaderRequestID))
	}
	r = e.do(http.MethodOptions, "/videos/lab/views", "", nil)
	if r.status != http.StatusNoContent || r.header.Get("Allow") == "" || r.header.Get(HeaderRequestID) == "" {
		t.Fatalf("OPTIONS: %s, headers %v", r, r.header)
	}

	text := scrape(t, e)
	expectMetrics(t, text,
		`tally_http_requests_total{code="200",method="POST",route="/videos/:videoId/views"} 2`,
		`tally_http_requests_total{code="200",method="GET",route="/videos/:videoId/views"} 2`,
		`tally_http_requests_total{code="415",method="POST",route="/videos/:videoId/views"} 1`,
		`tally_http_requests_total{code="404",method="GET",route="unmatched"} 1`,
		`tally_http_requests_total{code="404",method="other",route="unmatched"} 5`,
		`tally_http_requests_total{code="405",method="PUT",route="/videos/:videoId/views"} 1`,
		`tally_http_requests_total{code="204",method="OPTIONS",route="/videos/:videoId/views"} 1`,
		`tally_http_request_duration_seconds_count{method="POST",route="/videos/:videoId/views"} 3`,
		"tally_http_requests_in_flight 1", // the scrape itself
	)
	if strings.Contains(text, "BREW") {
		t.Error("/metrics holds a client's method as a label value")
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", text)
	}
}

// TestViewAnswerPretty: the hand-written answer of POST views is what c.JSON
// writes, and ?pretty still has echo indent it.
func TestViewAnswerPretty(t *testing.T) {
	e := newEnv(t, nil)
	r := e.postView("pv", `{"userId":"u"}`)
	if want := `{"videoId":"pv","counted":true,"viewCount":1}` + "\n"; r.status != http.StatusOK || string(r.body) != want {
		t.Fatalf("POST: %s, want 200 %s", r, want)
	}
	checkJSONContentType(t, r)
	r = e.do(http.MethodPost, "/videos/pv/views?pretty", "application/json", strings.NewReader(`{"userId":"u"}`))
	want := "{\n  \"videoId\": \"pv\",\n  \"counted\": false,\n  \"viewCount\": 1,\n  \"reason\": \"duplicate\"\n}\n"
	if r.status != http.StatusOK || string(r.body) != want {
		t.Fatalf("POST ?pretty: %s, want 200 %s", r, want)
	}
}

// TestReadBodyInProcess: a request made in process whose body is longer
// than its announced length is read whole, and refused over the limit, as
// io.ReadAll through http.MaxBytesReader did.
func TestReadBodyInProcess(t *testing.T) {
	e := newEnv(t, nil)
	h := e.api.Handler()
	post := func(body string, announced int64) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/videos/inproc/views", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.ContentLength = announced
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	body := `{"userId":"long-user"}`
	if w := post(body, 3); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"counted":true`) {
		t.Fatalf("body longer than announced: %d %s", w.Code, w.Body)
	}
	big := `{"userId":"u","pad":"` + strings.Repeat("x", MaxViewBody) + `"}`
	if w := post(big, 10); w.Code != http.StatusRequestEntityTooLarge || !strings.Contains(w.Body.String(), CodeBodyTooLarge) {
		t.Fatalf("body over the limit, announced short: %d %s", w.Code, w.Body)
	}
	if w := post(big, -1); w.Code != http.StatusRequestEntityTooLarge || !strings.Contains(w.Body.String(), CodeBodyTooLarge) {
		t.Fatalf("body over the limit, length unknown: %d %s", w.Code, w.Body)
	}
	// Shorter than announced: the read fails as io.ReadAll's did.
	req := httptest.NewRequest(http.MethodPost, "/videos/inproc/views", io.MultiReader(strings.NewReader(`{"user`), errReader{}))
	req.Header.Set("Content-Type", "application/json")
	req.ContentLength = 40
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), `"read body: unexpected EOF"`) {
		t.Fatalf("body cut short: %d %s", w.Code, w.Body)
	}
}

// errReader fails as net/http's body does when the client sends less than
// it announced.
type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

func TestJSONMediaType(t *testing.T) {
	for ct, want := range map[string]bool{
		"application/json": true, "application/json; charset=utf-8": true, "Application/JSON": true,
		"application/merge-patch+json": true, "application/json ; x=1": true,
		"": false, "text/plain": false, "application/jsonx": false, "application/json; =": false, "json": false,
	} {
		if got := jsonMediaType(ct); got != want {
			t.Errorf("jsonMediaType(%q) = %v, want %v", ct, got, want)
		}
	}
}

// TestClientAddr: the admission key is the host of an address with a port
// and any other address as it is, as net.SplitHostPort alone had it.
func TestClientAddr(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1": "192.0.2.1", "192.0.2.1:8080": "192.0.2.1", "::1": "::1", "[::1]:80": "::1",
		"2001:db8::1": "2001:db8::1", "fe80::1%eth0": "fe80::1%eth0", "[fe80::1%eth0]:9": "fe80::1%eth0",
		"": "", "not an ip": "not an ip", "host:1": "host", "[::1]": "[::1]",
	} {
		if got := clientAddr(in); got != want {
			t.Errorf("clientAddr(%q) = %q, want %q", in, got, want)
		}
	}
}
