package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// loadTestServer answers every view POST as counted, or with 503 if fail.
func loadTestServer(t *testing.T, fail bool) (*httptest.Server, *atomic.Int64) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if fail {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error":{"code":"unavailable","message":"no"}}`)) //nolint:errcheck // test
			return
		}
		w.Write([]byte(`{"videoId":"v1","counted":true,"viewCount":1}`)) //nolint:errcheck // test
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func TestRunLoadExitCodes(t *testing.T) {
	ok, okHits := loadTestServer(t, false)
	bad, _ := loadTestServer(t, true)
	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string // substring of stdout
	}{
		{"help", []string{"-h"}, 0, ""},
		{"unknown flag", []string{"--nope"}, 2, ""},
		{"bad mode", []string{"--mode", "write"}, 2, ""},
		{"too long", []string{"--duration", "11m"}, 2, ""},
		{"no end", []string{"--duration", "0", "--count", "0"}, 2, ""},
		{"stray arg", []string{"extra"}, 2, ""},
		{"ok", []string{"--target", ok.URL, "--count", "20", "--conns", "2"}, 0, "requests=20 ok=20 errors=0"},
		{"errors", []string{"--target", bad.URL, "--count", "5", "--conns", "1"}, 1, "errors=5"},
		{"allowed errors", []string{"--target", bad.URL, "--count", "5", "--allow-errors"}, 0, "http_503=5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := runLoad(context.Background(), tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout.String(), stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.out) {
				t.Fatalf("stdout %q lacks %q", stdout.String(), tc.out)
			}
		})
	}
	if n := okHits.Load(); n != 20 {
		t.Fatalf("server saw %d requests, want 20", n)
	}
}

func TestRunLoadThroughClient(t *testing.T) {
	ok, okHits := loadTestServer(t, false)
	bad, _ := loadTestServer(t, true)
	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"two targets", []string{"--target", bad.URL + "," + ok.URL, "--count", "20", "--conns", "2"}, 0, "requests=20 ok=20 errors=0"},
		{"regions", []string{"--region", "a=" + ok.URL, "--region", "b=" + bad.URL, "--count", "10", "--conns", "1"}, 0, "answeredBy: a=10"},
		{"one target via client", []string{"--target", ok.URL, "--via-client", "--count", "5"}, 0, "client: attempts=5 failovers=0"},
		{"target and region", []string{"--target", ok.URL, "--region", "a=" + ok.URL}, 2, ""},
		{"bad region", []string{"--region", "nameless"}, 2, ""},
		{"region twice", []string{"--region", "a=" + ok.URL, "--region", "a=" + bad.URL}, 2, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := runLoad(context.Background(), tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout.String(), stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.out) {
				t.Fatalf("stdout %q lacks %q", stdout.String(), tc.out)
			}
		})
	}
	if okHits.Load() < 35 {
		t.Fatalf("the healthy server saw %d requests, want at least 35", okHits.Load())
	}
}
