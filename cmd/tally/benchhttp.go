package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"time"
)

// benchConn is a lean HTTP/1.1 client connection for the comparison
// benchmark: one keep-alive connection, requests written by hand, responses
// parsed by hand (status, Content-Length or chunked body). net/http's client
// costs the load generator several times the CPU per request, and the
// generator shares the machine with the servers it measures; this one costs
// the same for tally and for the echo ceiling. Not safe for concurrent use.
type benchConn struct {
	addr    string // host:port
	timeout time.Duration
	c       net.Conn
	r       *bufio.Reader
	w       *bufio.Writer
	body    []byte // the last response's body, reused
}

// newBenchConn returns a client of the HTTP server at addr (host:port) whose
// every request must be answered within timeout. It dials on first use.
func newBenchConn(addr string, timeout time.Duration) *benchConn {
	return &benchConn{addr: addr, timeout: timeout}
}

// close closes the connection; the next request dials again.
func (b *benchConn) close() {
	if b.c != nil {
		b.c.Close()
		b.c = nil
	}
}

// do sends one request and returns the status and the body (valid until the
// next call). A transport error closes the connection; the next call dials
// again.
func (b *benchConn) do(method, path string, body []byte) (int, []byte, error) {
	if b.c == nil {
		c, err := net.DialTimeout("tcp", b.addr, b.timeout)
		if err != nil {
			return 0, nil, fmt.Errorf("dial %s: %w", b.addr, err)
		}
		b.c, b.r, b.w = c, bufio.NewReaderSize(c, 16<<10), bufio.NewWriterSize(c, 16<<10)
	}
	if err := b.c.SetDeadline(time.Now().Add(b.timeout)); err != nil {
		b.close()
		return 0, nil, fmt.Errorf("set deadline: %w", err)
	}
	status, resp, err := b.roundTrip(method, path, body)
	if err != nil {
		b.close()
		return 0, nil, err
	}
	return status, resp, nil
}

// roundTrip writes one request and reads its response.
func (b *benchConn) roundTrip(method, path string, body []byte) (int, []byte, error) {
	w := b.w
	w.WriteString(method)
	w.WriteByte(' ')
	w.WriteString(path)
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(b.addr)
	w.WriteString("\r\n")
	if body != nil {
		w.WriteString("Content-Type: application/json\r\nContent-Length: ")
		w.WriteString(strconv.Itoa(len(body)))
		w.WriteString("\r\n\r\n")
		w.Write(body)
	} else {
		w.WriteString("\r\n")
	}
	if err := w.Flush(); err != nil {
		return 0, nil, fmt.Errorf("send %s %s: %w", method, path, err)
	}
	line, err := b.line()
	if err != nil {
		return 0, nil, fmt.Errorf("read status of %s %s: %w", method, path, err)
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, nil, fmt.Errorf("bad status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, nil, fmt.Errorf("bad status line %q", line)
	}
	length, chunked := -1, false
	for {
		h, err := b.line()
		if err != nil {
			return 0, nil, fmt.Errorf("read headers: %w", err)
		}
		if len(h) == 0 {
			break
		}
		name, value, _ := bytes.Cut(h, []byte(":"))
		value = bytes.TrimSpace(value)
		switch {
		case asciiEqualFold(name, "content-length"):
			if length, err = strconv.Atoi(string(value)); err != nil || length < 0 || length > 64<<20 {
				return 0, nil, fmt.Errorf("bad Content-Length %q", value)
			}
		case asciiEqualFold(name, "transfer-encoding"):
			chunked = asciiEqualFold(value, "chunked")
		}
	}
	b.body = b.body[:0]
	switch {
	case chunked:
		for {
			sz, err := b.line()
			if err != nil {
				return 0, nil, fmt.Errorf("read chunk size: %w", err)
			}
			sz, _, _ = bytes.Cut(sz, []byte(";"))
			n, err := strconv.ParseUint(string(bytes.TrimSpace(sz)), 16, 31)
			if err != nil || len(b.body)+int(n) > 64<<20 {
				return 0, nil, fmt.Errorf("bad chunk size %q", sz)
			}
			if n == 0 {
				if _, err := b.line(); err != nil { // no trailers from our servers
					return 0, nil, fmt.Errorf("read last chunk: %w", err)
				}
				break
			}
			if err := b.readBody(int(n)); err != nil {
				return 0, nil, err
			}
			if _, err := b.line(); err != nil {
				return 0, nil, fmt.Errorf("read chunk end: %w", err)
			}
		}
	case length >= 0:
		if err := b.readBody(length); err != nil {
			return 0, nil, err
		}
	default:
		return 0, nil, errors.New("response without length: the benchmark needs keep-alive")
	}
	return status, b.body, nil
}

// readBody appends the next n bytes of the response to b.body.
func (b *benchConn) readBody(n int) error {
	start := len(b.body)
	b.body = slices.Grow(b.body, n)[:start+n]
	if _, err := io.ReadFull(b.r, b.body[start:]); err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	return nil
}

// line reads one CRLF-terminated line without the CRLF.
func (b *benchConn) line() ([]byte, error) {
	l, err := b.r.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	l = bytes.TrimSuffix(l, []byte("\n"))
	return bytes.TrimSuffix(l, []byte("\r")), nil
}

// asciiEqualFold reports whether b is s (lower case ASCII) in any case.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}
