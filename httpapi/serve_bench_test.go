package httpapi

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/tallyhq/tally/region"
)

// The benchmarks below drive the API's handler in process, without sockets
// or net/http's connection code, on an in-memory node: what is left is the
// cost of this package (middleware, decoding, answers, metrics) and of the
// node. allocs/op counts the node's allocations too; compare a change with
// the same benchmark before it. cmd/tally's BenchmarkHTTP* measure the whole
// path over loopback on a durable node.

// benchServer returns the handler of an API on an in-memory node.
func benchServer(b *testing.B) (http.Handler, *region.Node) {
	b.Helper()
	node, err := region.Open(region.TestConfig())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := node.Close(); err != nil {
			b.Errorf("close node: %v", err)
		}
	})
	return New(node, Options{}).Handler(), node
}

// benchWriter is a ResponseWriter that keeps the status and discards the
// body; its header map is reused.
type benchWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) WriteHeader(code int)        { w.status = code }
func (w *benchWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

func (w *benchWriter) reset() {
	clear(w.h)
	w.status, w.n = 0, 0
}

// benchBody is a request body that can be read again after reset.
type benchBody struct{ bytes.Reader }

func (*benchBody) Close() error { return nil }

// benchRequest builds a request as net/http's server would hand it over.
func benchRequest(method, path string, body []byte) (*http.Request, *benchBody) {
	u, err := url.ParseRequestURI(path)
	if err != nil {
		panic(err)
	}
	r := &http.Request{
		Method: method, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}, Host: "bench", RemoteAddr: "127.0.0.1:40000", RequestURI: path,
	}
	r = r.WithContext(context.Background())
	var bb *benchBody
	if body != nil {
		bb = &benchBody{}
		bb.Reset(body)
		r.Body, r.ContentLength = bb, int64(len(body))
		r.Header.Set("Content-Type", "application/json")
	} else {
		r.Body = http.NoBody
	}
	return r, bb
}

// BenchmarkServeView: single views, each of a fresh user (counted), over
// 10,000 videos, from 16 goroutines per CPU so that group commits batch.
func BenchmarkServeView(b *testing.B) {
	h, _ := benchServer(b)
	var seq atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		w := &benchWriter{h: http.Header{}}
		var body []byte
		for pb.Next() {
			i := seq.Add(1)
			body = append(append(append(body[:0], `{"userId":"u`...), strconv.FormatInt(i, 10)...), `"}`...)
			r, _ := benchRequest(http.MethodPost, "/videos/v"+strconv.FormatInt(i%10000, 10)+"/views", body)
			w.reset()
			h.ServeHTTP(w, r)
			if w.status != http.StatusOK {
				b.Errorf("status %d", w.status)
				return
			}
		}
	})
}

// BenchmarkServeGet: reads of 10,000 videos held in memory.
func BenchmarkServeGet(b *testing.B) {
	h, node := benchServer(b)
	views := make([]region.View, 10000)
	paths := make([]string, len(views))
	for i := range views {
		views[i] = region.View{Video: "v" + strconv.Itoa(i), User: "u"}
		paths[i] = "/videos/v" + strconv.Itoa(i) + "/views"
	}
	if _, err := node.RecordViews(context.Background(), views); err != nil {
		b.Fatal(err)
	}
	var seq atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := &benchWriter{h: http.Header{}}
		for pb.Next() {
			r, _ := benchRequest(http.MethodGet, paths[seq.Add(1)%int64(len(paths))], nil)
			w.reset()
			h.ServeHTTP(w, r)
			if w.status != http.StatusOK {
				b.Errorf("status %d", w.status)
				return
			}
		}
	})
}

// BenchmarkServeBatch: POST /v1/events of 1,000 fresh views over 1,000
// videos; reports views/s.
func BenchmarkServeBatch(b *testing.B) {
	h, _ := benchServer(b)
	const size = 1000
	var seq atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := &benchWriter{h: http.Header{}}
		var body []byte
		for pb.Next() {
			base := seq.Add(1) * size
			body = append(body[:0], '[')
			for j := range int64(size) {
				if j > 0 {
					body = append(body, ',')
				}
				body = append(body, `{"videoId":"v`...)
				body = strconv.AppendInt(body, j, 10)
				body = append(body, `","userId":"u`...)
				body = strconv.AppendInt(body, base+j, 10)
				body = append(body, `"}`...)
			}
			body = append(body, ']')
			r, _ := benchRequest(http.MethodPost, "/v1/events", body)
			w.reset()
			h.ServeHTTP(w, r)
			if w.status != http.StatusOK {
				b.Errorf("status %d", w.status)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "views/s")
}
