package tcp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

var secret = []byte("0123456789abcdef-test-secret")

func testConfig(secret []byte) Config {
	c := DefaultConfig("127.0.0.1:0", secret)
	c.BackoffMin, c.BackoffMax = time.Millisecond, 10*time.Millisecond
	c.BreakerFailures, c.BreakerCooldown = 3, time.Hour
	c.DialTimeout = time.Second
	return c
}

func listen(t *testing.T, cfg Config) (*Transport, chan []byte) {
	t.Helper()
	got := make(chan []byte, 100)
	tr, err := Listen(cfg, func(p []byte) { got <- bytes.Clone(p) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr, got
}

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSendReceive(t *testing.T) {
	a, _ := listen(t, testConfig(secret))
	b, got := listen(t, testConfig(secret))
	want := [][]byte{[]byte("one"), {}, bytes.Repeat([]byte{7}, 100_000)}
	for _, p := range want {
		if err := a.Send(b.Addr(), p); err != nil {
			t.Fatal(err)
		}
	}
	for i, w := range want {
		select {
		case p := <-got:
			if !bytes.Equal(p, w) {
				t.Fatalf("frame %d: got %d bytes, want %d", i, len(p), len(w))
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("frame %d never arrived", i)
		}
	}
	eventually(t, "send stats", func() bool { return a.Stats().FramesSent == 3 })
	if s := b.Stats(); s.FramesReceived != 3 || s.AuthFailures != 0 {
		t.Fatalf("receiver stats %+v", s)
	}
}

func TestWrongSecretRejected(t *testing.T) {
	b, got := listen(t, testConfig(secret))
	intruder, _ := listen(t, testConfig([]byte("another-secret-of-16+bytes")))
	if err := intruder.Send(b.Addr(), []byte("forged")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "auth failure counted", func() bool { return b.Stats().AuthFailures == 1 })
	select {
	case p := <-got:
		t.Fatalf("forged frame delivered: %q", p)
	default:
	}
}

func TestTamperedFrameRejected(t *testing.T) {
	b, got := listen(t, testConfig(secret))
	frame := AppendFrame(nil, secret, []byte("views+1"))
	frame[5] ^= 1 // flip a payload bit
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(frame); err != nil {
		t.Fatal(err)
	}
	eventually(t, "auth failure counted", func() bool { return b.Stats().AuthFailures == 1 })
	if len(got) != 0 {
		t.Fatal("tampered frame delivered")
	}
}

func TestOversizeFrameRejectedBeforeAllocating(t *testing.T) {
	cfg := testConfig(secret)
	cfg.MaxFrame = 1024
	b, _ := listen(t, cfg)
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], 0xffffffff)
	c.Write(hdr[:])
	eventually(t, "oversize counted", func() bool { return b.Stats().Oversize == 1 })
	if err := b.Send("127.0.0.1:1", make([]byte, 2048)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversize send: got %v, want ErrFrameTooLarge", err)
	}
}

func TestCircuitOpensOnUnreachablePeer(t *testing.T) {
	a, _ := listen(t, testConfig(secret))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there now
	a.Send(dead, []byte("x"))
	eventually(t, "circuit open", func() bool {
		return errors.Is(a.Send(dead, []byte("y")), ErrCircuitOpen)
	})
	if s := a.Stats(); s.DialFailures < 3 || s.Dropped == 0 {
		t.Fatalf("stats %+v: want ≥3 dial failures and drops", s)
	}
}

func TestShortSecretRefused(t *testing.T) {
	if _, err := Listen(testConfig([]byte("short")), func([]byte) {}); err == nil {
		t.Fatal("a 5-byte secret was accepted")
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add(AppendFrame(nil, secret, []byte("hello")))
	f.Add(AppendFrame(nil, secret, nil))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 5, 'a'})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ReadFrame(bytes.NewReader(b), secret, 1<<20, nil)
		if err != nil {
			return
		}
		// Anything accepted must be exactly a frame we would have written.
		if again := AppendFrame(nil, secret, p); !bytes.Equal(again, b[:len(again)]) {
			t.Fatalf("accepted a frame that does not re-encode identically")
		}
	})
}

func TestResetClosesCircuit(t *testing.T) {
	a, _ := listen(t, testConfig(secret))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	a.Send(addr, []byte("x"))
	eventually(t, "circuit open", func() bool { return errors.Is(a.Send(addr, []byte("y")), ErrCircuitOpen) })

	// The peer comes back on the same address; membership says so.
	b, got := listen(t, func() Config { c := testConfig(secret); c.ListenAddr = addr; return c }())
	_ = b
	a.Reset(addr)
	eventually(t, "a frame delivered after Reset (cooldown is an hour)", func() bool {
		a.Send(addr, []byte("z"))
		select {
		case <-got:
			return true
		default:
			return false
		}
	})
}

// closedByPeer waits until the server side closes c (a read returns EOF or
// a reset), failing after a generous deadline.
func closedByPeer(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var b [1]byte
	_, err := c.Read(b[:])
	if err == nil || isTimeout(err) {
		t.Fatalf("connection still open (read: %v)", err)
	}
}

func TestSilentConnectionClosedAfterHandshakeTimeout(t *testing.T) {
	cfg := testConfig(secret)
	cfg.HandshakeTimeout = 200 * time.Millisecond
	b, got := listen(t, cfg)
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A slowloris: the header of a frame, then nothing.
	c.Write([]byte{0, 0, 1, 0})
	closedByPeer(t, c)
	eventually(t, "refused connection counted", func() bool { return b.Stats().RefusedConns == 1 })

	// A peer with the secret still gets through, and stays connected past
	// the handshake timeout.
	a, _ := listen(t, testConfig(secret))
	a.Send(b.Addr(), []byte("one"))
	<-got
	time.Sleep(3 * cfg.HandshakeTimeout) // let a wrongly applied handshake deadline fire
	a.Send(b.Addr(), []byte("two"))
	select {
	case p := <-got:
		if string(p) != "two" {
			t.Fatalf("got %q", p)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("an authenticated connection was cut by the handshake timeout")
	}
	if s := b.Stats(); s.RefusedConns != 1 || s.FramesReceived != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func TestUnauthenticatedConnectionsBounded(t *testing.T) {
	cfg := testConfig(secret)
	cfg.MaxUnauthenticated = 2
	cfg.HandshakeTimeout = time.Hour
	b, got := listen(t, cfg)
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	extra, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	closedByPeer(t, extra)
	eventually(t, "refused connection counted", func() bool { return b.Stats().RefusedConns >= 1 })

	// Once a slot frees, a real peer connects and delivers.
	held[0].Close()
	a, _ := listen(t, testConfig(secret))
	eventually(t, "frame delivered once a slot is free", func() bool {
		a.Send(b.Addr(), []byte("hello"))
		select {
		case <-got:
			return true
		case <-time.After(20 * time.Millisecond):
			return false
		}
	})
}

func TestTrickledFrameCostsWhatItSent(t *testing.T) {
	// A frame announcing 4 MiB that delivers 1,000 bytes and stops.
	hdr := binary.BigEndian.AppendUint32(nil, 4<<20-1)
	in := append(hdr, make([]byte, 1000)...)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 10 {
		if _, err := ReadFrame(bytes.NewReader(in), secret, 4<<20, nil); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("truncated frame: %v", err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / 10; per > 256<<10 {
		t.Fatalf("a truncated frame of 1,000 bytes allocated %d bytes", per)
	}
	// A whole frame of that size still reads.
	big := bytes.Repeat([]byte{1}, 4<<20-1)
	p, err := ReadFrame(bytes.NewReader(AppendFrame(nil, secret, big)), secret, 4<<20, nil)
	if err != nil || !bytes.Equal(p, big) {
		t.Fatalf("4 MiB frame: %v", err)
	}
}
