package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tallyhq/tally/region"
)

// Body limits, in bytes.
const (
	// MaxViewBody bounds POST /videos/{id}/views.
	MaxViewBody = 4 << 10
	// MaxBatchEvents is the most events one POST /v1/events may carry.
	MaxBatchEvents = 10_000
	// MaxBatchBody bounds POST /v1/events: 10,000 events of two 128-byte IDs
	// and a timestamp fit with room to spare.
	MaxBatchBody = 5 << 20
)

// Options configures a Server.
type Options struct {
	// Logger receives request errors. Nil discards them.
	Logger *slog.Logger
	// Metrics is the node's metrics (also given to region.Config.Observer).
	// Nil creates a fresh set.
	Metrics *Metrics
	// ShutdownTimeout bounds the drain of in-flight requests on shutdown.
	ShutdownTimeout time.Duration
	// NodeName names the node on the dashboard when it does not replicate
	// (a replicating node shows its cluster name).
	NodeName string
	// Joining says the node was told to join existing members (--join): it is
	// then not ready until it has synced with one of them, or has found no
	// peer for AloneAfter. A node that does not join founds the cluster and
	// is ready at once.
	Joining bool
	// AloneAfter: see Joining. Zero means DefaultAloneAfter.
	AloneAfter time.Duration
	// PeerTimeout bounds each request the dashboard makes to a peer for its
	// count. Zero means DefaultPeerTimeout.
	PeerTimeout time.Duration
}

// Server is the HTTP API of one node. It is safe for concurrent use.
type Server struct {
	e       *echo.Echo
	node    *region.Node
	metrics *Metrics
	log     *slog.Logger
	opts    Options
	ids     *requestIDs
	ready   *readiness
	dash    *dashboard
}

// New builds the API for node.
func New(node *region.Node, o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics()
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 10 * time.Second
	}
	if o.AloneAfter <= 0 {
		o.AloneAfter = DefaultAloneAfter
	}
	if o.PeerTimeout <= 0 {
		o.PeerTimeout = DefaultPeerTimeout
	}
	s := &Server{
		e: echo.New(), node: node, metrics: o.Metrics, log: o.Logger, opts: o, ids: newRequestIDs(),
		ready: &readiness{node: node, joining: o.Joining, aloneAfter: o.AloneAfter, start: time.Now(), now: time.Now},
	}
	s.dash = newDashboard(node, o.Metrics, o)
	s.metrics.registerNode(node, s.ready)

	e := s.e
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	// Rate limits key on the peer address; forwarding headers are not trusted.
	e.IPExtractor = echo.ExtractIPDirect()
	e.Use(s.observe, middleware.Recover())

	e.POST("/videos/:videoId/views", s.postView)
	e.GET("/videos/:videoId/views", s.getViews)
	e.POST("/v1/events", s.postEvents)
	e.GET("/v1/status", s.status)
	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{})))

	assets, index := dashboardAssets()
	e.GET("/", func(c echo.Context) error {
		securityHeaders(c.Response().Header())
		c.Response().Header().Set(echo.HeaderCacheControl, "no-cache")
		return c.Blob(http.StatusOK, "text/html; charset=utf-8", index)
	})
	e.GET("/dashboard/*", serveAsset(assets))
	e.GET("/v1/dashboard", s.getDashboard)
	return s
}

// Handler returns the API as an http.Handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.e }

// Serve answers on ln until ctx ends, then stops taking connections and
// drains in-flight requests for up to ShutdownTimeout.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.e,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve http on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	s.ready.draining.Store(true) // a probe that still gets through sees it
	s.log.Info("draining HTTP", "timeout", s.opts.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("drain http: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http: %w", err)
	}
	return nil
}

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// Ready reports whether the node is ready, as GET /readyz answers it, and why.
func (s *Server) Ready() (bool, string) { return s.ready.check() }
