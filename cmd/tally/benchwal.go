package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// walFloor is the floor of a durable view on echo, for the comparison
// benchmark: each view is appended as a line to one file, and a view is
// answered once the fdatasync of its group has returned. Nothing else: no
// key, no index, no dedup, no state to recover, one write and one fdatasync
// per group commit on a file that is zeroed and synced before the first
// view (so a group's fdatasync changes no file metadata: cheaper than
// appending, as Redis does to its log, which also commits the new size).
// Any durable view on echo does at least this, so its req/s bound every
// design that group commits the same way (a write as soon as the last one
// is durable) on these cores, however it stores what it must. The file is
// a ring of its preallocated size: past the end, writes start again at
// offset 0 (what is measured is the cost of durable appends, not what they
// keep).
type walFloor struct {
	f    *os.File
	size int64         // preallocated bytes
	kick chan struct{} // capacity 1: "there is a group to write"
	stop chan struct{}
	done chan struct{}

	mu  sync.Mutex
	cur *walGroup // collecting the next write

	off     int64 // next write offset; the writing goroutine's alone
	lastErr error // of the group written at close
}

// walGroup is one group commit of the floor.
type walGroup struct {
	buf  []byte
	done chan struct{} // closed when err is final
	err  error
}

// walFloorBytes is the floor's preallocated file size: 64 MiB, written once
// with zeros before the first view.
const walFloorBytes = 64 << 20

// openWALFloor creates (or truncates) path, zeroes size bytes of it, syncs,
// and starts the group committer. Stop it with close.
func openWALFloor(path string, size int64) (*walFloor, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("wal floor: %w", err)
	}
	// Zeroed a page per write: the page cache keeps what a write fills in
	// folios about its size, and a later small write dirties its whole
	// folio, which fdatasync then writes out. Zeroed a MiB per write, the
	// file made every group commit write a MiB here (ext4 on Linux 6.18);
	// zeroed a page per write, a page.
	zero := make([]byte, 4<<10)
	for n := int64(0); n < size; n += int64(len(zero)) {
		if _, err := f.Write(zero[:min(int64(len(zero)), size-n)]); err != nil {
			f.Close()
			return nil, fmt.Errorf("wal floor: zero %s: %w", path, err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("wal floor: sync %s: %w", path, err)
	}
	w := &walFloor{f: f, size: size, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		cur: &walGroup{done: make(chan struct{})}}
	go w.loop()
	return w, nil
}

// append adds rec to the next group and returns it; the record is durable
// once the group's done is closed with err nil. rec must be shorter than the
// file.
func (w *walFloor) append(rec []byte) *walGroup {
	w.mu.Lock()
	g := w.cur
	g.buf = append(g.buf, rec...)
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
	return g
}

// log is the floor's durable log of one view: it appends a line of video,
// time and the body as it came (not decoded: the least a durable view must
// do is keep what it was sent; a line is one view as long as bodies hold no
// newline, as tally's JSON bodies do not), and returns once that line is
// durable.
func (w *walFloor) log(ctx context.Context, video string, body []byte) error {
	rec := make([]byte, 0, len(video)+len(body)+24)
	rec = append(append(rec, video...), '\t')
	rec = append(strconv.AppendInt(rec, time.Now().UnixMilli(), 10), '\t')
	rec = append(append(rec, body...), '\n')
	g := w.append(rec)
	select {
	case <-g.done:
		if g.err != nil {
			return fmt.Errorf("wal floor: %w", g.err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for group commit: %w", ctx.Err())
	}
}

// loop writes groups, one after the other, until close.
func (w *walFloor) loop() {
	defer close(w.done)
	for {
		select {
		case <-w.kick:
		case <-w.stop:
			w.lastErr = w.commit() // what was appended before close
			return
		}
		w.commit()
	}
}

// commit swaps in a fresh group, writes the old one at the ring's offset,
// fdatasyncs, releases its views and returns its error.
func (w *walFloor) commit() error {
	w.mu.Lock()
	g := w.cur
	w.cur = &walGroup{done: make(chan struct{}), buf: make([]byte, 0, cap(g.buf))}
	w.mu.Unlock()
	if len(g.buf) > 0 {
		g.err = w.write(g.buf)
	}
	close(g.done)
	return g.err
}

// write puts b at the ring's offset and fdatasyncs the file.
func (w *walFloor) write(b []byte) error {
	for len(b) > 0 {
		if w.off >= w.size {
			w.off = 0
		}
		n := min(int64(len(b)), w.size-w.off)
		if _, err := w.f.WriteAt(b[:n], w.off); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		w.off += n
		b = b[n:]
	}
	if err := datasync(w.f); err != nil {
		return fmt.Errorf("fdatasync: %w", err)
	}
	return nil
}

// close writes what is pending, stops the committer and closes the file.
func (w *walFloor) close() error {
	close(w.stop)
	<-w.done
	return errors.Join(w.lastErr, w.f.Close())
}
