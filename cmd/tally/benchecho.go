package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tallyhq/tally/store"
)

// durableSeq makes the keys of the durable ceiling's records unique.
var durableSeq atomic.Uint64

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
func newEchoCeiling() *echo.Echo { return newEchoCeilingOn(nil) }

// newEchoCeilingOn is newEchoCeiling whose POST, with com set, also logs
// the view as one raw event record (tally's format before event blocks)
// through com to its Badger store and answers once the group commit holding
// it is durable: the durable ceiling. A durable view on echo and Badger
// comes little faster than this on the same machine, whatever else it does
// (tally's also deduplicates, counts, buckets and sketches): a design could
// pack many views into one record, and save Badger's cost per entry (about
// 1 µs of a view's 33-36 µs of server CPU here) and this decoder's (encoding/json,
// about 1 µs), and nothing else this does is optional.
func newEchoCeilingOn(com *store.Committer) *echo.Echo {
	if com == nil {
		return newEchoCeilingWith(nil)
	}
	return newEchoCeilingWith(func(ctx context.Context, video string, body []byte) error {
		return logDurably(ctx, com, video, body)
	})
}

// newEchoCeilingWith is newEchoCeiling whose POST, with logView set, also
// hands the view to logView and answers once it returns (an error it returns
// is the answer): the durable ceiling (logDurably) or the durable floor
// (walFloor.log).
func newEchoCeilingWith(logView func(ctx context.Context, video string, body []byte) error) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.GET("/videos/:videoId/views", func(c echo.Context) error {
		return c.JSON(http.StatusOK, echoCount{VideoID: c.Param("videoId")})
	})
	e.POST("/videos/:videoId/views", func(c echo.Context) error {
		body, err := io.ReadAll(io.LimitReader(c.Request().Body, 4<<10))
		if err != nil {
			return fmt.Errorf("read body: %w", err)
		}
		if logView != nil {
			if err := logView(c.Request().Context(), c.Param("videoId"), body); err != nil {
				return err
			}
		}
		return c.JSON(http.StatusOK, echoCounted{VideoID: c.Param("videoId"), Counted: true, ViewCount: 1})
	})
	return e
}

// logDurably writes the view of user (in body, {"userId": ...}) on video
// to com's store as a raw event record, as tally logs one, and returns once
// its group commit is durable.
func logDurably(ctx context.Context, com *store.Committer, video string, body []byte) error {
	var req struct {
		UserID string `json:"userId"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, "body: "+err.Error())
	}
	ev := store.Event{Video: video, User: req.UserID, IngestMs: time.Now().UnixMilli(), Fate: store.FateCounted}
	m, err := store.EventMutation(ev, durableSeq.Add(1), time.Hour)
	if err != nil {
		return err
	}
	t, err := com.Submit(m)
	if err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	if err := t.Wait(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// runBenchEchoServer is "tally bench echo-server": the echo ceiling of the
// comparison benchmark as a process of its own, serving until ctx ends.
func runBenchEchoServer(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tally bench echo-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http", "127.0.0.1:0", "listen `address` host:port")
	data := fs.String("data", "", "with a `folder`, POST also writes a record of the view to a Badger store there and answers once its group commit is durable")
	wal := fs.String("wal", "", "with a `file`, POST also appends a line of the view to it (zeroed beforehand, a ring of 64 MiB) and answers once the fdatasync of its group has returned: the floor of a durable view")
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
	if *data != "" && *wal != "" {
		fmt.Fprintln(stderr, "tally bench echo-server: --data and --wal exclude each other")
		return 2
	}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(stderr, "tally bench echo-server: listen: %v\n", err)
		return 1
	}
	var com *store.Committer
	if *data != "" {
		st, err := store.Open(store.DefaultOptions(*data))
		if err != nil {
			fmt.Fprintf(stderr, "tally bench echo-server: %v\n", err)
			return 1
		}
		com = store.NewCommitter(st, store.CommitterConfig{})
		defer func() {
			if err := com.Close(); err != nil {
				fmt.Fprintf(stderr, "tally bench echo-server: close committer: %v\n", err)
			}
			if err := st.Close(); err != nil {
				fmt.Fprintf(stderr, "tally bench echo-server: close store: %v\n", err)
			}
		}()
	}
	var handler http.Handler
	if *wal == "" {
		handler = newEchoCeilingOn(com)
	} else {
		w, err := openWALFloor(*wal, walFloorBytes)
		if err != nil {
			fmt.Fprintf(stderr, "tally bench echo-server: %v\n", err)
			return 1
		}
		defer func() {
			if err := w.close(); err != nil {
				fmt.Fprintf(stderr, "tally bench echo-server: close wal: %v\n", err)
			}
		}()
		handler = newEchoCeilingWith(w.log)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
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
