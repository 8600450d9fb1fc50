package httpapi

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tallyhq/tally/region"
)

func TestZZExplore(t *testing.T) {
	node, err := region.Open(region.TestConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	srv := httptest.NewServer(New(node, Options{}).Handler())
	defer srv.Close()
	do := func(method, path, ct, body string, chunked bool) {
		var r io.Reader = strings.NewReader(body)
		if chunked {
			r = io.NopCloser(r)
		}
		req, err := http.NewRequest(method, srv.URL+path, r)
		if err != nil {
			t.Logf("%s %s: %v", method, path, err)
			return
		}
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Logf("%s %s: %v", method, path, err)
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if len(b) > 300 {
			b = b[:300]
		}
		t.Logf("%s %q -> %d %v %s", method, path, resp.StatusCode, resp.Header, b)
	}
	j := "application/json"
	do("POST", "/videos//views", j, `{"userId":"u1"}`, false)
	do("POST", "/videos/a%20b/views", j, `{"userId":"u1"}`, false)
	do("POST", "/videos/a%2Fb/views", j, `{"userId":"u1"}`, false)
	do("POST", "/videos/%C3%BC/views", j, `{"userId":"u1"}`, false)
	do("POST", "/videos/ü/views", j, `{"userId":"u1"}`, false)
	do("POST", "/videos/../views", j, `{"userId":"u1"}`, false)
	do("POST", "/videos/a%2Eb/views", j, `{"userId":"u1"}`, false)
	do("POST", "/videos/a:b/views", j, `{"userId":"u1"}`, false)
	do("POST", "/videos/a/views/", j, `{"userId":"u1"}`, false)
	do("POST", "/videos/a/views?x=1", j, `{"userId":"u1"}`, false)
	do("POST", "/videos/x/views", j, `null`, false)
	do("POST", "/videos/x/views", j, `[]`, false)
	do("POST", "/videos/x/views", j, ``, false)
	do("POST", "/videos/x/views", "", `{"userId":"u1"}`, false)
	do("POST", "/videos/x/views", "text/plain", `{"userId":"u1"}`, false)
	do("POST", "/videos/x/views", "application/json; charset=utf-8", `{"userId":"u2"}`, false)
	do("POST", "/videos/x/views", "application/json;", `{"userId":"u3"}`, false)
	do("POST", "/videos/x/views", j, `{"userId":"u1"}`+strings.Repeat(" ", 5000), true)
	do("POST", "/videos/x/views", j, `{"userId":"u1"}`+strings.Repeat(" ", 5000), false)
	do("POST", "/v1/events", j, `[{"videoId":"big","userId":"u"}`+strings.Repeat(" ", 5<<20)+`]`, false)
	do("POST", "/v1/events", j, `[{"videoId":"big","userId":"u"}`+strings.Repeat(" ", 5<<20)+`]`, true)
	do("DELETE", "/videos/x/views", "", "", false)
	do("PUT", "/videos/x/views", j, `{"userId":"u1"}`, false)
	do("GET", "/v1/events", "", "", false)
	do("HEAD", "/videos/x/views", "", "", false)
	do("GET", "/videos/x", "", "", false)
	do("GET", "/nope", "", "", false)
	do("GET", "/", "", "", false)
	do("GET", "/videos/a%20b/views", "", "", false)
	do("POST", "/videos/x/views", j, `{"userId":"u1","userId":"u9"}`, false)
}
