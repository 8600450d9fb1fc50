package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
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
	// Clock is the node's clock (region.Config.Clock), for the default end
	// of a time series range ("now"): time buckets follow the node's clock,
	// so the defaults must too. Nil means time.Now.
	Clock func() time.Time

	// AdminToken is the bearer token of the admin routes (the audit log,
	// the gossip keyring). Empty turns the admin API off: every admin route
	// answers 403 admin_disabled.
	AdminToken string
	// Keyring, if set, is the cluster's gossip keyring, managed through
	// /v1/admin/gossip-keys.
	Keyring Keyring

	// TLS, if set, serves HTTPS with it (certificates included); the
	// dashboard then asks peers over HTTPS too, verifying them with PeerTLS
	// (nil: the system's roots).
	TLS, PeerTLS *tls.Config

	// Bounds of the listener; zero takes the default.
	//
	// MaxConns bounds open connections (DefaultMaxConns).
	MaxConns int
	// MaxInflight, MaxInflightBytes and MaxInflightPerClient bound ingest
	// requests in flight (DefaultMaxInflight, DefaultMaxInflightBytes,
	// DefaultMaxInflightPerClient); see shed.go.
	MaxInflight          int
	MaxInflightBytes     int64
	MaxInflightPerClient int
	// ReadHeaderTimeout bounds reading a request's headers (slowloris):
	// DefaultReadHeaderTimeout. ReadTimeout bounds reading a whole request,
	// body included: DefaultReadTimeout. WriteTimeout bounds writing an
	// answer (the audit stream extends it as it goes): DefaultWriteTimeout.
	// IdleTimeout closes a keep-alive connection that sends nothing:
	// DefaultIdleTimeout.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
}

// Listener timeouts (Options).
const (
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 30 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	// maxHeaderBytes bounds a request's headers.
	maxHeaderBytes = 16 << 10
)

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

	adminHash []byte // SHA-256 of the admin token; nil: admin API off
	admission *admission
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
	if o.Clock == nil {
		o.Clock = time.Now
	}
	defaults := []struct {
		v *time.Duration
		d time.Duration
	}{
		{&o.ReadHeaderTimeout, DefaultReadHeaderTimeout}, {&o.ReadTimeout, DefaultReadTimeout},
		{&o.WriteTimeout, DefaultWriteTimeout}, {&o.IdleTimeout, DefaultIdleTimeout},
	}
	for _, d := range defaults {
		if *d.v <= 0 {
			*d.v = d.d
		}
	}
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.MaxInflight <= 0 {
		o.MaxInflight = DefaultMaxInflight
	}
	if o.MaxInflightBytes <= 0 {
		o.MaxInflightBytes = DefaultMaxInflightBytes
	}
	if o.MaxInflightPerClient <= 0 {
		o.MaxInflightPerClient = DefaultMaxInflightPerClient
	}
	s := &Server{
		e: echo.New(), node: node, metrics: o.Metrics, log: o.Logger, opts: o, ids: newRequestIDs(),
		ready: &readiness{node: node, joining: o.Joining, aloneAfter: o.AloneAfter, start: time.Now(), now: time.Now},
	}
	s.admission = newAdmission(int64(o.MaxInflight), o.MaxInflightBytes, o.MaxInflightPerClient)
	if o.AdminToken != "" {
		h := sha256.Sum256([]byte(o.AdminToken))
		s.adminHash = h[:]
	}
	s.dash = newDashboard(node, o.Metrics, o)
	s.metrics.registerNode(node, s.ready)
	s.metrics.registerAdmission(s.admission)

	e := s.e
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	// Rate limits key on the peer address; forwarding headers are not trusted.
	e.IPExtractor = echo.ExtractIPDirect()
	e.Use(s.serve)

	// Route middleware is applied here, once: echo would apply it anew to
	// every request, a closure each time.
	e.POST("/videos/:videoId/views", s.admit(viewCost)(s.postView))
	e.GET("/videos/:videoId/views", s.getViews)
	e.POST("/v1/events", s.admit(batchCost)(s.postEvents))
	e.POST("/v1/likes", s.admit(viewCost)(s.postLike))
	e.DELETE("/v1/likes/:videoId", s.admit(viewCost)(s.deleteLike))
	e.GET("/v1/likes/:videoId", s.getLikes)
	e.GET("/v1/videos/:videoId/counts", s.getCounts)
	e.GET("/v1/videos/:videoId/unique-viewers", s.getUniqueViewers)
	e.GET("/v1/top", s.getTop)
	e.GET("/v1/audit/events", s.requireAdmin(s.auditEvents))
	e.GET("/v1/admin/gossip-keys", s.requireAdmin(s.getGossipKeys))
	e.POST("/v1/admin/gossip-keys", s.requireAdmin(s.postGossipKeys))
	e.GET("/debug/pprof/*", s.requireAdmin(s.debugPprof))
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

// now is the node's clock.
func (s *Server) now() time.Time { return s.opts.Clock() }

// Handler returns the API as an http.Handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.e }

// Serve answers on ln until ctx ends, then stops taking connections and
// drains in-flight requests for up to ShutdownTimeout. It serves HTTPS when
// Options.TLS is set. At most MaxConns connections are open at once; every
// connection has read, write and idle timeouts, so a client that sends
// slowly (slowloris) or not at all is cut off.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.e,
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		ReadTimeout:       s.opts.ReadTimeout,
		WriteTimeout:      s.opts.WriteTimeout,
		IdleTimeout:       s.opts.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		TLSConfig:         s.opts.TLS,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	ln = newLimitListener(ln, s.opts.MaxConns)
	errc := make(chan error, 1)
	go func() {
		if s.opts.TLS != nil {
			errc <- hs.ServeTLS(ln, "", "") // certificates come in TLSConfig
			return
		}
		errc <- hs.Serve(ln)
	}()
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
