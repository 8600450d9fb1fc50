package httpapi

import (
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
)

// Profiles of the running node, for its operators: the Go runtime's pprof
// endpoints under /debug/pprof/ (the index; heap, allocs, goroutine, block,
// mutex, threadcreate; profile and trace, each over ?seconds=N), behind the
// admin token like every admin route. The command line is not served: a
// token given as a flag would be in it.
//
//	go tool pprof -http=: 'http://host:8080/debug/pprof/profile?seconds=10'
//
// needs the token in a header, so fetch with curl -H "Authorization: Bearer
// $TOKEN" -o cpu.pprof and open the file.

// pprofMaxSeconds bounds ?seconds= of profile and trace.
const pprofMaxSeconds = 120

// CodeInvalidSeconds: a pprof ?seconds= that is not a whole number of
// seconds from 1 to pprofMaxSeconds (400).
const CodeInvalidSeconds = "invalid_seconds"

// debugPprof answers GET /debug/pprof/*.
func (s *Server) debugPprof(c echo.Context) error {
	w, r := c.Response(), c.Request()
	name := c.Param("*")
	if q := r.URL.Query().Get("seconds"); q != "" {
		secs, err := strconv.Atoi(q)
		if err != nil || secs < 1 || secs > pprofMaxSeconds {
			return errf(http.StatusBadRequest, CodeInvalidSeconds, "seconds: want 1..%d", pprofMaxSeconds)
		}
		// The answer comes after the profile is taken: give writing it that
		// long and more.
		if err := http.NewResponseController(w).SetWriteDeadline(time.Now().Add(time.Duration(secs)*time.Second + 30*time.Second)); err != nil {
			return errf(http.StatusInternalServerError, CodeInternal, "extend the write deadline: %v", err)
		}
	}
	switch name {
	case "":
		pprof.Index(w, r)
	case "cmdline":
		return errf(http.StatusNotFound, CodeNotFound, "the command line is not served (it may hold the admin token)")
	case "profile":
		pprof.Profile(w, r)
	case "trace":
		pprof.Trace(w, r)
	case "symbol":
		pprof.Symbol(w, r)
	default:
		pprof.Handler(name).ServeHTTP(w, r)
	}
	return nil
}
