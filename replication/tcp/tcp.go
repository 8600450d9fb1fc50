// Package tcp is the replication transport between tally nodes: TCP
// connections carrying length-prefixed frames, each authenticated with
// HMAC-SHA256 under a shared cluster secret.
//
// A frame is
//
//	length  uint32, big endian: the number of payload bytes (≤ MaxFrame)
//	payload length bytes (an encoded replication message; opaque here)
//	mac     32 bytes: HMAC-SHA256(secret, length ‖ payload)
//
// The length is checked against MaxFrame before anything is allocated, and
// the payload buffer grows with the bytes that actually arrive, so a length
// header alone costs nothing. A frame whose MAC does not verify closes the
// connection and is counted. Inbound connections are bounded (MaxConns), and
// one that has not sent an authenticated frame within HandshakeTimeout is
// closed; at most MaxUnauthenticated such connections wait at once, so
// clients without the secret cannot crowd out peers. Frames
// are not protected against replay: every replication message is idempotent
// (CRDT merges, monotone acks), so a replayed frame changes nothing.
//
// Sending never blocks the caller: each peer has a bounded queue and one
// sender goroutine that dials with a timeout, retries with exponential backoff
// and full jitter, and opens a circuit breaker after repeated failures, during
// which frames for that peer are dropped (anti-entropy resends what matters).
//
// A Transport is safe for concurrent use.
package tcp

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// macSize is the length of the HMAC-SHA256 trailer of every frame.
const macSize = sha256.Size

// Sentinel errors of Send.
var (
	// ErrQueueFull: the peer's send queue is full; the frame was dropped.
	ErrQueueFull = errors.New("tcp: send queue full")
	// ErrCircuitOpen: the peer failed repeatedly; frames are dropped until the cooldown passes.
	ErrCircuitOpen = errors.New("tcp: circuit open")
	// ErrFrameTooLarge: the payload exceeds MaxFrame.
	ErrFrameTooLarge = errors.New("tcp: frame too large")
	// ErrClosed: the transport is closed.
	ErrClosed = errors.New("tcp: transport closed")
	// ErrBadMAC is returned by ReadFrame for a frame whose MAC does not verify.
	ErrBadMAC = errors.New("tcp: frame authentication failed")
)

// Config configures a Transport.
type Config struct {
	// ListenAddr is the host:port to accept peers on; port 0 picks one.
	ListenAddr string
	// Secret is the shared cluster key for frame MACs; at least 16 bytes.
	Secret []byte
	// MaxFrame bounds a payload in bytes, both ways.
	MaxFrame int
	// QueueLen is the number of frames queued per peer before drops.
	QueueLen int
	// DialTimeout bounds one connection attempt.
	DialTimeout time.Duration
	// WriteTimeout bounds writing one frame.
	WriteTimeout time.Duration
	// IdleTimeout closes an inbound connection that sends nothing for this long.
	IdleTimeout time.Duration
	// HandshakeTimeout closes an inbound connection whose first
	// authenticated frame has not fully arrived within it.
	HandshakeTimeout time.Duration
	// MaxConns bounds inbound connections; MaxUnauthenticated those of them
	// that have not yet sent an authenticated frame. Connections over
	// either bound are closed at once and counted.
	MaxConns, MaxUnauthenticated int
	// BackoffMin and BackoffMax bound the delay between reconnection attempts
	// (exponential, with full jitter).
	BackoffMin, BackoffMax time.Duration
	// BreakerFailures consecutive failed attempts open the circuit for
	// BreakerCooldown.
	BreakerFailures int
	BreakerCooldown time.Duration
	// Logger receives connection problems. Nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns production settings for a transport on addr.
func DefaultConfig(addr string, secret []byte) Config {
	return Config{
		ListenAddr:   addr,
		Secret:       secret,
		MaxFrame:     4 << 20, // several replication batches of 256 KiB fit
		QueueLen:     1024,
		DialTimeout:  2 * time.Second,
		WriteTimeout: 5 * time.Second,
		IdleTimeout:  2 * time.Minute,
		// A peer sends its first frame (a heartbeat or a delta) as soon as
		// it connects; 10 s leaves room for a 4 MiB frame on a slow link.
		HandshakeTimeout:   10 * time.Second,
		MaxConns:           1024, // peers open one each; room for large clusters
		MaxUnauthenticated: 64,
		BackoffMin:         50 * time.Millisecond,
		BackoffMax:         5 * time.Second,
		BreakerFailures:    5,
		BreakerCooldown:    10 * time.Second,
	}
}

// Stats are cumulative counters of a Transport.
type Stats struct {
	FramesSent, BytesSent         uint64
	FramesReceived, BytesReceived uint64
	Dropped                       uint64 // frames dropped: queue full, circuit open, write failed
	DialFailures                  uint64
	AuthFailures                  uint64 // inbound frames whose MAC did not verify
	Oversize                      uint64 // inbound frames over MaxFrame
	// RefusedConns counts inbound connections closed over MaxConns or
	// MaxUnauthenticated, or for sending no authenticated frame within
	// HandshakeTimeout.
	RefusedConns uint64
}

// Transport sends frames to peers by address and hands received payloads to
// a handler.
type Transport struct {
	cfg     Config
	ln      net.Listener
	handler func(payload []byte)
	log     *slog.Logger

	mu      sync.Mutex // protects peers, conns, inbound, unauth, closed
	peers   map[string]*peer
	conns   map[net.Conn]struct{}
	inbound int // accepted connections open
	unauth  int // of which not yet authenticated
	closed  bool
	wg      sync.WaitGroup
	stop    chan struct{}

	framesSent, bytesSent, framesRecv, bytesRecv  atomic.Uint64
	dropped, dialFailures, authFailures, oversize atomic.Uint64
	refused                                       atomic.Uint64
}

// Listen starts a transport. handler is called, from the connection's
// goroutine, with every authenticated payload received; it must not keep the
// slice after returning.
func Listen(cfg Config, handler func(payload []byte)) (*Transport, error) {
	if len(cfg.Secret) < 16 {
		return nil, fmt.Errorf("tcp transport: secret of %d bytes; want at least 16", len(cfg.Secret))
	}
	if cfg.MaxFrame <= 0 || cfg.QueueLen <= 0 || cfg.BreakerFailures <= 0 {
		return nil, fmt.Errorf("tcp transport: MaxFrame, QueueLen and BreakerFailures must be positive")
	}
	if cfg.MaxConns <= 0 || cfg.MaxUnauthenticated <= 0 || cfg.HandshakeTimeout <= 0 || cfg.IdleTimeout <= 0 {
		return nil, fmt.Errorf("tcp transport: MaxConns, MaxUnauthenticated, HandshakeTimeout and IdleTimeout must be positive")
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("tcp transport: listen on %s: %w", cfg.ListenAddr, err)
	}
	t := &Transport{
		cfg: cfg, ln: ln, handler: handler, log: cfg.Logger,
		peers: make(map[string]*peer), conns: make(map[net.Conn]struct{}), stop: make(chan struct{}),
	}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	t.wg.Add(1)
	go t.accept()
	return t, nil
}

// Addr is the address the transport listens on.
func (t *Transport) Addr() string { return t.ln.Addr().String() }

// Stats samples the transport's counters.
func (t *Transport) Stats() Stats {
	return Stats{
		FramesSent: t.framesSent.Load(), BytesSent: t.bytesSent.Load(),
		FramesReceived: t.framesRecv.Load(), BytesReceived: t.bytesRecv.Load(),
		Dropped: t.dropped.Load(), DialFailures: t.dialFailures.Load(),
		AuthFailures: t.authFailures.Load(), Oversize: t.oversize.Load(),
		RefusedConns: t.refused.Load(),
	}
}

// Send queues payload for the peer at addr without blocking. An error means
// the frame was dropped (the caller's protocol retries what matters).
func (t *Transport) Send(addr string, payload []byte) error {
	if len(payload) > t.cfg.MaxFrame {
		t.dropped.Add(1)
		return fmt.Errorf("send %d bytes to %s: %w", len(payload), addr, ErrFrameTooLarge)
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return ErrClosed
	}
	p := t.peers[addr]
	if p == nil {
		p = &peer{addr: addr, queue: make(chan []byte, t.cfg.QueueLen), reset: make(chan struct{}, 1)}
		t.peers[addr] = p
		t.wg.Add(1)
		go t.sendLoop(p)
	}
	t.mu.Unlock()
	if until := p.openUntil.Load(); until != 0 && time.Now().UnixNano() < until {
		t.dropped.Add(1)
		return fmt.Errorf("send to %s: %w", addr, ErrCircuitOpen)
	}
	select {
	case p.queue <- payload:
		return nil
	default:
		t.dropped.Add(1)
		return fmt.Errorf("send to %s: %w", addr, ErrQueueFull)
	}
}

// Reset closes the circuit towards addr and cuts any backoff short: call it
// when membership reports the peer alive again, so that a restarted node is
// not ignored for the rest of a cooldown.
func (t *Transport) Reset(addr string) {
	t.mu.Lock()
	p := t.peers[addr]
	t.mu.Unlock()
	if p == nil {
		return
	}
	p.openUntil.Store(0)
	select {
	case p.reset <- struct{}{}:
	default:
	}
}

// Close stops accepting, closes every connection and waits for the
// transport's goroutines. Queued frames are dropped.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	close(t.stop)
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	err := t.ln.Close()
	t.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("tcp transport: close listener: %w", err)
	}
	return nil
}

// peer is the outbound side towards one address.
type peer struct {
	addr      string
	queue     chan []byte
	openUntil atomic.Int64  // unix ns until which the circuit is open; 0 if closed
	reset     chan struct{} // capacity 1: cut a backoff or cooldown short
}

func (t *Transport) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		c.Close()
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *Transport) untrack(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
	c.Close()
}

func (t *Transport) sendLoop(p *peer) {
	defer t.wg.Done()
	var (
		conn     net.Conn
		w        *bufio.Writer
		failures int
	)
	defer func() {
		if conn != nil {
			t.untrack(conn)
		}
	}()
	for {
		var payload []byte
		select {
		case <-t.stop:
			return
		case payload = <-p.queue:
		}
		for conn == nil {
			c, err := net.DialTimeout("tcp", p.addr, t.cfg.DialTimeout)
			if err == nil {
				if !t.track(c) {
					return
				}
				conn, w, failures = c, bufio.NewWriterSize(c, 64<<10), 0
				p.openUntil.Store(0)
				break
			}
			t.dialFailures.Add(1)
			failures++
			if failures >= t.cfg.BreakerFailures {
				p.openUntil.Store(time.Now().Add(t.cfg.BreakerCooldown).UnixNano())
				t.log.Warn("replication peer unreachable; circuit open", "peer", p.addr, "failures", failures, "err", err)
				t.drain(p)
				payload = nil
				if !t.wait(t.cfg.BreakerCooldown, p.reset) {
					return
				}
				p.openUntil.Store(0)
				failures = 0
				break
			}
			if !t.wait(backoff(t.cfg.BackoffMin, t.cfg.BackoffMax, failures), p.reset) {
				return
			}
		}
		if payload == nil || conn == nil {
			continue
		}
		conn.SetWriteDeadline(time.Now().Add(t.cfg.WriteTimeout))
		err := writeFrame(w, t.cfg.Secret, payload)
		// Flush when nothing else is queued, so bursts share one write.
		if err == nil && len(p.queue) == 0 {
			err = w.Flush()
		}
		if err != nil {
			t.dropped.Add(1)
			t.log.Debug("replication send failed; reconnecting", "peer", p.addr, "err", err)
			t.untrack(conn)
			conn, w = nil, nil
			continue
		}
		t.framesSent.Add(1)
		t.bytesSent.Add(uint64(4 + len(payload) + macSize))
	}
}

// drain drops every queued frame of p (its circuit just opened).
func (t *Transport) drain(p *peer) {
	for {
		select {
		case <-p.queue:
			t.dropped.Add(1)
		default:
			return
		}
	}
}

// wait sleeps for d, or until cut is signalled (nil: never), unless the
// transport closes first; it reports whether to go on.
func (t *Transport) wait(d time.Duration, cut <-chan struct{}) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-cut:
		return true
	case <-t.stop:
		return false
	}
}

// backoff is exponential from min doubling per attempt up to max, with full jitter.
func backoff(lo, hi time.Duration, attempt int) time.Duration {
	d := lo << min(attempt, 30)
	if d <= 0 || d > hi {
		d = hi
	}
	return time.Duration(rand.Int64N(int64(d)) + 1)
}

func (t *Transport) accept() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			select {
			case <-t.stop:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			t.log.Warn("replication accept failed", "err", err)
			if !t.wait(100*time.Millisecond, nil) {
				return
			}
			continue
		}
		switch ok, err := t.admit(c); {
		case err != nil:
			return
		case !ok:
			// Counted, and logged at debug only: a flood must not flood the log too.
			t.refused.Add(1)
			t.log.Debug("replication connection refused: too many connections", "remote", c.RemoteAddr().String())
			c.Close()
			continue
		}
		t.wg.Add(1)
		go t.readLoop(c)
	}
}

// admit tracks an accepted connection if it is within the bounds (ok); err
// is ErrClosed once the transport closed.
func (t *Transport) admit(c net.Conn) (ok bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.closed:
		c.Close()
		return false, ErrClosed
	case t.inbound >= t.cfg.MaxConns || t.unauth >= t.cfg.MaxUnauthenticated:
		return false, nil
	}
	t.inbound++
	t.unauth++
	t.conns[c] = struct{}{}
	return true, nil
}

// release forgets an inbound connection.
func (t *Transport) release(c net.Conn, authenticated bool) {
	t.mu.Lock()
	t.inbound--
	if !authenticated {
		t.unauth--
	}
	t.mu.Unlock()
	t.untrack(c)
}

func (t *Transport) readLoop(c net.Conn) {
	defer t.wg.Done()
	authenticated := false
	defer func() { t.release(c, authenticated) }()
	r := bufio.NewReaderSize(c, 64<<10)
	var buf []byte
	handshake := time.Now().Add(t.cfg.HandshakeTimeout)
	for {
		deadline := time.Now().Add(t.cfg.IdleTimeout)
		if !authenticated {
			deadline = handshake
		}
		c.SetReadDeadline(deadline)
		payload, err := ReadFrame(r, t.cfg.Secret, t.cfg.MaxFrame, buf)
		switch {
		case errors.Is(err, ErrBadMAC):
			t.authFailures.Add(1)
			t.log.Warn("replication frame failed authentication; closing connection", "remote", c.RemoteAddr().String())
			return
		case errors.Is(err, ErrFrameTooLarge):
			t.oversize.Add(1)
			t.log.Warn("replication frame too large; closing connection", "remote", c.RemoteAddr().String(), "err", err)
			return
		case err != nil && !authenticated && isTimeout(err):
			t.refused.Add(1)
			t.log.Debug("replication connection sent no authenticated frame in time; closing", "remote", c.RemoteAddr().String(), "timeout", t.cfg.HandshakeTimeout.String())
			return
		case err != nil:
			return // EOF, timeout, reset: the peer reconnects when it has more
		}
		if !authenticated {
			authenticated = true
			t.mu.Lock()
			t.unauth--
			t.mu.Unlock()
		}
		t.framesRecv.Add(1)
		t.bytesRecv.Add(uint64(4 + len(payload) + macSize))
		t.handler(payload)
		buf = payload[:0]
	}
}

// writeFrame writes one authenticated frame to w (not flushed).
func writeFrame(w io.Writer, secret, payload []byte) error {
	if _, err := w.Write(AppendFrame(make([]byte, 0, 4+len(payload)+macSize), secret, payload)); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// AppendFrame appends the authenticated frame of payload to dst (for tests
// and tools that speak the protocol without a Transport).
func AppendFrame(dst, secret, payload []byte) []byte {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(payload)))
	mac := hmac.New(sha256.New, secret)
	mac.Write(hdr[:])
	mac.Write(payload)
	dst = append(dst, hdr[:]...)
	dst = append(dst, payload...)
	return mac.Sum(dst)
}

// isTimeout reports whether err is a deadline passing.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// readChunk is the most a frame's buffer grows by before the bytes to fill
// it have arrived.
const readChunk = 64 << 10

// ReadFrame reads one frame from r, checks its length against maxFrame before
// allocating, verifies its MAC, and returns the payload (reusing buf's
// storage when large enough). A buffer it must allocate grows with the bytes
// read, at most doubling per step, so a frame that announces a large length
// and then trickles (or stops) costs memory in proportion to what it sent.
func ReadFrame(r io.Reader, secret []byte, maxFrame int, buf []byte) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(maxFrame) {
		return nil, fmt.Errorf("frame of %d bytes, limit %d: %w", n, maxFrame, ErrFrameTooLarge)
	}
	need := int(n) + macSize
	if cap(buf) >= need {
		buf = buf[:need]
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, fmt.Errorf("read frame body: %w", err)
		}
	} else {
		buf = buf[:0]
		for len(buf) < need {
			step := min(need-len(buf), max(len(buf), readChunk))
			if cap(buf)-len(buf) < step {
				grown := make([]byte, len(buf), len(buf)+step)
				copy(grown, buf)
				buf = grown
			}
			got, err := io.ReadFull(r, buf[len(buf):len(buf)+step])
			buf = buf[:len(buf)+got]
			if err != nil {
				return nil, fmt.Errorf("read frame body: %w", err)
			}
		}
	}
	payload, got := buf[:n], buf[n:]
	mac := hmac.New(sha256.New, secret)
	mac.Write(hdr[:])
	mac.Write(payload)
	if !hmac.Equal(mac.Sum(nil), got) {
		return nil, ErrBadMAC
	}
	return payload, nil
}
