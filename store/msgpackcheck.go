package store

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// maxMsgpackDepth bounds the nesting checkMsgpack accepts.
const maxMsgpackDepth = 16

var errMsgpackTruncated = errors.New("declared length beyond the input")

// checkMsgpack verifies that b is exactly one msgpack value whose every
// declared length (strings, binaries, extensions, element counts of arrays
// and maps) fits in the bytes that follow it, nested at most
// maxMsgpackDepth deep. msgpack v5.4.1 allocates by declared lengths before
// it finds the input short (a few bytes can make it allocate gigabytes), so
// every msgpack.Unmarshal of untrusted bytes goes through this first: after
// it, no allocation can exceed the input's size.
func checkMsgpack(b []byte) error {
	rest, err := skipMsgpack(b, 0)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return fmt.Errorf("%d bytes after the value", len(rest))
	}
	return nil
}

// skipMsgpack checks the value at the start of b and returns what follows it.
func skipMsgpack(b []byte, depth int) ([]byte, error) {
	if depth > maxMsgpackDepth {
		return nil, fmt.Errorf("nested deeper than %d", maxMsgpackDepth)
	}
	if len(b) == 0 {
		return nil, errMsgpackTruncated
	}
	c, b := b[0], b[1:]
	switch {
	case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		return b, nil // fixints, nil, booleans
	case c&0xf0 == 0x80:
		return skipElems(b, 2*int(c&0x0f), depth)
	case c&0xf0 == 0x90:
		return skipElems(b, int(c&0x0f), depth)
	case c&0xe0 == 0xa0:
		return skipBytes(b, int(c&0x1f))
	}
	switch c {
	case 0xcc, 0xd0:
		return skipBytes(b, 1)
	case 0xcd, 0xd1:
		return skipBytes(b, 2)
	case 0xca, 0xce, 0xd2:
		return skipBytes(b, 4)
	case 0xcb, 0xcf, 0xd3:
		return skipBytes(b, 8)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext: a type byte and 1 to 16 bytes
		return skipBytes(b, 1+1<<(c-0xd4))
	case 0xc4, 0xd9: // bin8, str8
		return skipSized(b, 1, 0)
	case 0xc5, 0xda: // bin16, str16
		return skipSized(b, 2, 0)
	case 0xc6, 0xdb: // bin32, str32
		return skipSized(b, 4, 0)
	case 0xc7: // ext8, ext16, ext32: length, type byte, data
		return skipSized(b, 1, 1)
	case 0xc8:
		return skipSized(b, 2, 1)
	case 0xc9:
		return skipSized(b, 4, 1)
	case 0xdc, 0xdd, 0xde, 0xdf: // array16, array32, map16, map32
		size := 2
		if c == 0xdd || c == 0xdf {
			size = 4
		}
		n, b, err := readLen(b, size)
		if err != nil {
			return nil, err
		}
		if c >= 0xde {
			n *= 2
		}
		return skipElems(b, n, depth)
	}
	return nil, fmt.Errorf("invalid code 0x%02x", c)
}

// readLen reads a big-endian length of size bytes.
func readLen(b []byte, size int) (int, []byte, error) {
	if len(b) < size {
		return 0, nil, errMsgpackTruncated
	}
	var n uint64
	switch size {
	case 1:
		n = uint64(b[0])
	case 2:
		n = uint64(binary.BigEndian.Uint16(b))
	default:
		n = uint64(binary.BigEndian.Uint32(b))
	}
	if n > uint64(len(b)) {
		return 0, nil, errMsgpackTruncated // more than the input holds, whatever follows
	}
	return int(n), b[size:], nil
}

// skipSized skips a length of size bytes, extra bytes (an extension type)
// and the data the length declares.
func skipSized(b []byte, size, extra int) ([]byte, error) {
	n, b, err := readLen(b, size)
	if err != nil {
		return nil, err
	}
	return skipBytes(b, extra+n)
}

func skipBytes(b []byte, n int) ([]byte, error) {
	if n > len(b) {
		return nil, errMsgpackTruncated
	}
	return b[n:], nil
}

// skipElems checks n values; each takes at least one byte, so a count
// beyond the input is refused before any is read.
func skipElems(b []byte, n, depth int) ([]byte, error) {
	if n > len(b) {
		return nil, errMsgpackTruncated
	}
	var err error
	for range n {
		if b, err = skipMsgpack(b, depth+1); err != nil {
			return nil, err
		}
	}
	return b, nil
}
