package httpapi

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
)

// HeaderRequestID carries a request's ID: taken from the request when it
// holds a usable one (a proxy's), made up otherwise, and always echoed in the
// answer. Log lines about the request carry it as request_id.
const HeaderRequestID = "X-Request-Id"

// maxRequestIDLen bounds a request ID taken from a client.
const maxRequestIDLen = 128

// requestIDs makes request IDs: a random per-process prefix and a sequence
// number, unique without a random read per request.
type requestIDs struct {
	prefix string
	seq    atomic.Uint64
}

func newRequestIDs() *requestIDs {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		// crypto/rand does not fail on supported platforms; a clock prefix
		// still keeps IDs apart across restarts.
		b = strconv.AppendInt(nil, time.Now().UnixNano(), 36)
	}
	return &requestIDs{prefix: hex.EncodeToString(b) + "-"}
}

// next returns a new ID, in one allocation.
func (r *requestIDs) next() string {
	var buf [64]byte
	b := append(buf[:0], r.prefix...)
	return string(strconv.AppendUint(b, r.seq.Add(1), 10))
}

// validRequestID accepts IDs of printable ASCII without spaces, so that a
// client cannot forge log lines or headers through it.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// requestLogger returns base with the ID of the request c answers (serve
// puts it in the answer's headers before any handler runs). The logger is
// made when asked for: most requests never log.
func requestLogger(c echo.Context, base *slog.Logger) *slog.Logger {
	if id := c.Response().Header().Get(HeaderRequestID); id != "" {
		return base.With("request_id", id)
	}
	return base
}

// serve is the one global middleware: it gives the request its ID (echoed in
// the answer, read back by requestLogger), turns a panic of the handler into
// a 500 internal error (as echo's Recover middleware did), writes any error
// the handler returned (so the status is known), records count and latency
// by route template (never the raw path, which would make labels unbounded),
// and logs the request at debug level.
//
// It is a single middleware because echo applies global middleware anew to
// every request: each one costs a closure per request, and echo's Recover
// another for its configuration. The request's context is left as it came:
// a context value would cost a copy of the request.
func (s *Server) serve(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		req := c.Request()
		id := req.Header.Get(HeaderRequestID)
		if !validRequestID(id) {
			id = s.ids.next()
		}
		// HeaderRequestID is in canonical form: no need for Set's rewrite.
		c.Response().Header()[HeaderRequestID] = []string{id}

		s.metrics.inflight.Inc()
		if err := s.recovered(next, c); err != nil {
			c.Error(err)
		}
		s.metrics.inflight.Dec()

		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		status := c.Response().Status
		elapsed := time.Since(start)
		s.metrics.observeRequest(route, req.Method, status, elapsed.Seconds())
		if s.log.Enabled(req.Context(), slog.LevelDebug) {
			s.log.Debug("http request", "request_id", id, "method", req.Method, "route", route, "path", req.URL.Path,
				"status", status, "duration", elapsed, "remote", c.RealIP(), "bytes", c.Response().Size)
		}
		return nil
	}
}

// panicStackSize bounds the stack trace logged for a handler's panic.
const panicStackSize = 8 << 10

// recovered runs next and returns its error or, if it panicked, the panic
// as an error (a value that is not an error is formatted with %v), which
// the caller answers as any other: 500 internal, unless the value is an
// error classify knows. http.ErrAbortHandler is panicked on, for net/http
// to abort the answer. The panic is logged with the handler's stack.
func (s *Server) recovered(next echo.HandlerFunc, c echo.Context) (err error) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if r == http.ErrAbortHandler {
			panic(r)
		}
		var ok bool
		if err, ok = r.(error); !ok {
			err = fmt.Errorf("%v", r)
		}
		stack := make([]byte, panicStackSize)
		stack = stack[:runtime.Stack(stack, false)]
		requestLogger(c, s.log).Error("handler panicked", "method", c.Request().Method, "path", c.Request().URL.Path,
			"panic", err, "stack", string(stack))
	}()
	return next(c)
}
