package httpapi

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tallyhq/tally/region"
)

// DefaultAloneAfter is how long a joining node that knows no peer waits
// before it declares itself alone and ready (Options.AloneAfter).
const DefaultAloneAfter = 10 * time.Second

// readiness decides GET /readyz. A node is ready once its state is loaded (it
// is, when the server exists) and, if it replicates, it has synced with at
// least one peer (held everything in that peer's log) or is alone: it founded
// the cluster (no --join), or it joined and found no peer within AloneAfter.
// Once ready it stays ready until a write fails to persist or it shuts down:
// a region cut off from the others still serves, which is the point of
// active-active. It is safe for concurrent use.
type readiness struct {
	node       *region.Node
	joining    bool
	aloneAfter time.Duration
	start      time.Time
	now        func() time.Time

	reached  atomic.Pointer[string] // why it became ready; nil before
	draining atomic.Bool            // shutting down
}

// check reports whether the node is ready, and why (or why not).
func (r *readiness) check() (bool, string) {
	switch {
	case r.draining.Load():
		return false, "shutting down"
	case !r.node.Ready():
		return false, "a write failed to persist"
	case r.reached.Load() != nil:
		return true, *r.reached.Load()
	case !r.node.Replicating():
		return r.reach("single node, state loaded")
	}
	cs := r.node.ClusterStatus()
	for _, p := range cs.Peers {
		if p.LagSeconds >= 0 {
			return r.reach(fmt.Sprintf("synced with %s", p.PeerStatus.Peer))
		}
	}
	switch {
	case len(cs.Peers) > 0:
		return false, fmt.Sprintf("syncing with %d peers", len(cs.Peers))
	case !r.joining:
		return r.reach("alone: this node founded the cluster")
	case r.now().Sub(r.start) >= r.aloneAfter:
		return r.reach(fmt.Sprintf("alone: no peer found within %v of start", r.aloneAfter))
	}
	return false, "looking for peers"
}

func (r *readiness) reach(why string) (bool, string) {
	r.reached.CompareAndSwap(nil, &why)
	return true, *r.reached.Load()
}

// readyBody is the answer of GET /readyz when ready; otherwise it is an
// error (503, code unavailable) whose message says why not.
type readyBody struct {
	Status string `json:"status"` // "ready"
	Reason string `json:"reason"`
}

func (s *Server) readyz(c echo.Context) error {
	ok, why := s.ready.check()
	if !ok {
		return errf(http.StatusServiceUnavailable, CodeUnavailable, "not ready: %s", why)
	}
	return c.JSON(http.StatusOK, readyBody{Status: "ready", Reason: why})
}
