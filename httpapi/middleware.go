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

type loggerKey struct{}

// RequestLogger returns the logger of the request that ctx belongs to (it
// carries the request ID), or fallback outside a request.
func RequestLogger(ctx context.Context, fallback *slog.Logger) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return fallback
}

// observe is the outermost middleware: it gives the request its ID and a
// logger that carries it, writes any error the handler returned (so the
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
		log := s.log.With("request_id", id)
		c.SetRequest(req.WithContext(context.WithValue(req.Context(), loggerKey{}, log)))

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
		s.metrics.requests.WithLabelValues(route, req.Method, strconv.Itoa(status)).Inc()
		s.metrics.latency.WithLabelValues(route, req.Method).Observe(elapsed.Seconds())
		if log.Enabled(req.Context(), slog.LevelDebug) {
			log.Debug("http request", "method", req.Method, "route", route, "path", req.URL.Path,
				"status", status, "duration", elapsed, "remote", c.RealIP(), "bytes", c.Response().Size)
		}
		return nil
	}
}
