package httpapi

import (
	"net"
	"net/http"
	"net/netip"
	"sync"

	"github.com/labstack/echo/v4"
)

// Load shedding. Ingest requests (POST views, POST /v1/likes, DELETE
// /v1/likes/{id}, POST /v1/events) are admitted against three bounds before
// their body is read: requests in flight on the node, an estimate of the memory they hold (bytes), and requests in flight
// per client address. Over a node bound the answer is 503 overloaded, over
// the client bound 429 too_many_requests, both with Retry-After and nothing
// counted. Memory under any load is then bounded by these budgets plus the
// group committer's own bound (region.Config.MaxPending), instead of growing
// with the offered load. Reads are cheap and are bounded by the connection
// limit alone.

// Admission defaults (Options).
const (
	// DefaultMaxInflight bounds ingest requests being answered at once.
	DefaultMaxInflight = 4096
	// DefaultMaxInflightBytes bounds the estimated memory of ingest requests
	// in flight (bodies and what decoding them takes).
	DefaultMaxInflightBytes = 256 << 20
	// DefaultMaxInflightPerClient bounds ingest requests in flight from one
	// client address: a client holding more is told 429.
	DefaultMaxInflightPerClient = 256
	// DefaultMaxConns bounds open HTTP connections; beyond it new
	// connections wait in the kernel's accept queue.
	DefaultMaxConns = 10_000
)

// CodeTooManyRequests: this client has too many requests in flight (429).
const CodeTooManyRequests = "too_many_requests"

// Costs of ingest requests for the byte budget.
const (
	// requestOverhead is what any request holds beside its body: the
	// goroutine, headers, the answer.
	requestOverhead = 8 << 10
	// batchEventCost bounds the memory one decoded batch event takes on the
	// way through the node (decoded strings, view, result, log mutation).
	batchEventCost = 512
	// decodeFactor bounds decoded memory per body byte for a batch whose
	// events are tiny.
	decodeFactor = 8
)

// viewCost is the admission cost of a single view.
func viewCost(*http.Request) int64 { return MaxViewBody + requestOverhead }

// batchCost is the admission cost of a batch: its body (the most allowed
// when the length is not announced) and its decoded events.
func batchCost(r *http.Request) int64 {
	l := r.ContentLength
	if l < 0 || l > MaxBatchBody {
		l = MaxBatchBody
	}
	return min(decodeFactor*l, l+MaxBatchEvents*batchEventCost) + requestOverhead
}

// admission counts what ingest requests in flight hold. It is safe for
// concurrent use.
type admission struct {
	maxReqs, maxBytes int64
	maxPerClient      int

	mu        sync.Mutex // protects the fields below
	reqs      int64
	bytes     int64
	perClient map[string]int // entries removed at zero: bounded by reqs
}

func newAdmission(maxReqs, maxBytes int64, maxPerClient int) *admission {
	return &admission{maxReqs: maxReqs, maxBytes: maxBytes, maxPerClient: maxPerClient, perClient: map[string]int{}}
}

// Shed reasons, as the tally_http_shed_total metric labels them.
const (
	shedRequests    = "inflight_requests"
	shedBytes       = "inflight_bytes"
	shedClient      = "client_inflight"
	shedCommitQueue = "commit_queue"
)

// acquire admits a request of cost from client, or says which bound it
// hit ("" when admitted).
func (a *admission) acquire(client string, cost int64) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.reqs+1 > a.maxReqs:
		return shedRequests
	// A request dearer than the whole budget is still admitted alone, or
	// it could never be.
	case a.bytes+cost > a.maxBytes && a.bytes > 0:
		return shedBytes
	case a.perClient[client]+1 > a.maxPerClient:
		return shedClient
	}
	a.reqs++
	a.bytes += cost
	a.perClient[client]++
	return ""
}

func (a *admission) release(client string, cost int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reqs--
	a.bytes -= cost
	if a.perClient[client]--; a.perClient[client] <= 0 {
		delete(a.perClient, client)
	}
}

// inflight returns the requests and bytes admitted now.
func (a *admission) inflight() (reqs, bytes int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reqs, a.bytes
}

// admit is the middleware of ingest routes: it sheds a request over a bound
// before anything of it is read.
func (s *Server) admit(cost func(*http.Request) int64) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			client := clientAddr(c.RealIP())
			n := cost(c.Request())
			switch why := s.admission.acquire(client, n); why {
			case "":
			case shedClient:
				s.metrics.shed.WithLabelValues(why).Inc()
				return errf(http.StatusTooManyRequests, CodeTooManyRequests,
					"this client has %d requests in flight, the most allowed; retry after a moment", s.admission.maxPerClient)
			default:
				s.metrics.shed.WithLabelValues(why).Inc()
				return errf(http.StatusServiceUnavailable, CodeOverloaded, "the node is over capacity (%s); retry after a moment", why)
			}
			defer s.admission.release(client, n)
			return next(c)
		}
	}
}

// clientAddr is the client address of ip as echo's IP extractor gave it:
// its host if it carries a port. An address without one, as the extractor
// gives it, is checked first: net.SplitHostPort would fail on it, at the
// cost of an allocated error per request.
func clientAddr(ip string) string {
	if _, err := netip.ParseAddr(ip); err == nil {
		return ip // an IP alone: SplitHostPort fails on every one
	}
	if host, _, err := net.SplitHostPort(ip); err == nil {
		return host
	}
	return ip
}

// limitListener accepts at most max connections at once; beyond, Accept
// waits for one to close (the kernel queues the rest), so slow or idle
// clients cannot exhaust file descriptors and memory.
type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{} // closed by Close: a waiting Accept gives up
	closeOnce sync.Once
}

func newLimitListener(ln net.Listener, max int) *limitListener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, max), done: make(chan struct{})}
}

// Accept waits for a free slot, then for a connection.
func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

// Close closes the listener and wakes an Accept waiting for a slot.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitConn gives its slot back once, on Close.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

// Close closes the connection and frees its slot.
func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
