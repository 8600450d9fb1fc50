package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// echoCount and echoCounted are the echo ceiling's fixed answers: the shapes
// of tally's answers to GET and POST /videos/{id}/views.
type echoCount struct {
	VideoID     string  `json:"videoId"`
	ViewCount   uint64  `json:"viewCount"`
	LastUpdated *string `json:"lastUpdated"`
}

type echoCounted struct {
	VideoID   string `json:"videoId"`
	Counted   bool   `json:"counted"`
	ViewCount uint64 `json:"viewCount"`
}

// newEchoCeiling is the handler of "tally bench echo-server": a bare echo
// router (the framework tally's API runs on) with trivial handlers on
// tally's view routes and fixed answers of the same shape. No middleware, no
// state, no disk: tally's answers cannot come faster than this on the same
// machine.
func newEchoCeiling() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.GET("/videos/:videoId/views", func(c echo.Context) error {
		return c.JSON(http.StatusOK, echoCount{VideoID: c.Param("videoId")})
	})
	e.POST("/videos/:videoId/views", func(c echo.Context) error {
		if _, err := io.Copy(io.Discard, io.LimitReader(c.Request().Body, 4<<10)); err != nil {
			return fmt.Errorf("read body: %w", err)
		}
		return c.JSON(http.StatusOK, echoCounted{VideoID: c.Param("videoId"), Counted: true, ViewCount: 1})
	})
	return e
}

// runBenchEchoServer is "tally bench echo-server": the echo ceiling of the
// comparison benchmark as a process of its own, serving until ctx ends.
func runBenchEchoServer(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tally bench echo-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http", "127.0.0.1:0", "listen `address` host:port")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tally bench echo-server: unexpected arguments %q\n", fs.Args())
		return 2
	}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(stderr, "tally bench echo-server: listen: %v\n", err)
		return 1
	}
	srv := &http.Server{Handler: newEchoCeiling(), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stdout, "tally bench echo-server: listening on http://%s\n", l.Addr())
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx) //nolint:errcheck // the process ends either way
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(stderr, "tally bench echo-server: serve: %v\n", err)
		return 1
	}
	return 0
}
