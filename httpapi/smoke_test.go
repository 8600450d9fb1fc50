package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tallyhq/tally/region"
)

func TestSmoke(t *testing.T) {
	node, err := region.Open(region.TestConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	srv := httptest.NewServer(New(node, Options{}).Handler())
	defer srv.Close()
	do := func(method, path, ct, body string) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var sb strings.Builder
		buf := make([]byte, 600)
		n, _ := resp.Body.Read(buf)
		sb.Write(buf[:n])
		resp.Body.Close()
		t.Logf("%s %s -> %d %s", method, path, resp.StatusCode, sb.String())
	}
	do("POST", "/videos/v1/views", "application/json", `{"userId":"u1"}`)
	do("POST", "/videos/v1/views", "application/json", `{"userId":"u1"}`)
	do("POST", "/videos/v1/views", "application/json", `{"userId":"u2","timestamp":"2026-11-22T05:00:00Z"}`)
	do("GET", "/videos/v1/views", "", "")
	do("GET", "/videos/nope/views", "", "")
	do("POST", "/v1/events", "application/json", `[{"videoId":"v1","userId":"u3"},{"videoId":"v1","userId":"u3"},{"videoId":"v 1","userId":"u3"},{"videoId":"v2","userId":"u3","timestamp":5}]`)
	do("POST", "/videos/v1/views", "text/plain", `{"userId":"u1"}`)
	do("POST", "/videos/v1/views", "application/json", `{"userId":`)
	do("DELETE", "/videos/v1/views", "", "")
	do("GET", "/nope", "", "")
	do("GET", "/readyz", "", "")
}
