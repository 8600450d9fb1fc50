package tcp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
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
		p, err := ReadFrame(bytes.NewReader(b), secret, 1<<16, nil)
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
