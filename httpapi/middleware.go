package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
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

func (r *requestIDs) next() string { return r.prefix + strconv.FormatUint(r.seq.Add(1), 10) }

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

// requestIDKey is the context key of a request's ID (a string).
type requestIDKey struct{}

// RequestLogger returns base with the ID of the request that ctx belongs
// to, or base itself outside a request. The logger is made when asked for:
// most requests never log.
func RequestLogger(ctx context.Context, base *slog.Logger) *slog.Logger {
	if id, ok := ctx.Value(requestIDKey{}).(string); ok {
		return base.With("request_id", id)
	}
	return base
}

// observe is the outermost middleware: it gives the request its ID (in its
// context, for RequestLogger), writes any error the handler returned (so the
// status is known), records count and latency by route template (never the
// raw path, which would make labels unbounded), and logs the request at debug
// level.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		req := c.Request()
		id := req.Header.Get(HeaderRequestID)
		if !validRequestID(id) {
			id = s.ids.next()
		}
		c.Response().Header().Set(HeaderRequestID, id)
		c.SetRequest(req.WithContext(context.WithValue(req.Context(), requestIDKey{}, id)))

		s.metrics.inflight.Inc()
		err := next(c)
		if err != nil {
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
