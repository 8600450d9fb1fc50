package store

import (
	"runtime"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func TestCheckMsgpack(t *testing.T) {
	good, _ := msgpack.Marshal(map[string]any{"a": []any{1, "x", 2.5, nil, true, []byte{1, 2}}, "b": map[string]int{"c": -7}})
	if err := checkMsgpack(good); err != nil {
		t.Fatalf("valid value refused: %v", err)
	}
	for name, b := range map[string][]byte{
		"empty":             {},
		"str32 of 3.6 GB":   []byte("\x87\xa10\xdb\xdb\xdb\xdb\xdb"),
		"array16 too long":  []byte("\x87\xa10\xdc0000"),
		"map32 huge":        {0xdf, 0xff, 0xff, 0xff, 0xff},
		"bin32 huge":        {0xc6, 0x7f, 0xff, 0xff, 0xff, 1},
		"ext32 huge":        {0xc9, 0x7f, 0xff, 0xff, 0xff, 1, 1},
		"trailing bytes":    {0x01, 0x02},
		"never-used 0xc1":   {0xc1},
		"fixstr short":      {0xa5, 'a'},
		"too deep":          append(repeat(0x91, 20), 0x01),
		"fixext16 short":    {0xd8, 1, 2},
		"uint64 short":      {0xcf, 0, 0},
		"fixarray of 15, 1": {0x9f, 0x01},
	} {
		if err := checkMsgpack(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func repeat(c byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return b
}

// TestDecodeEventHostileLengths: inputs whose declared lengths promise
// gigabytes allocate next to nothing (msgpack alone allocated up to
// gigabytes per call for some of them).
func TestDecodeEventHostileLengths(t *testing.T) {
	ins := [][]byte{
		[]byte("\x87\xa10\xdc0000\xd6\xfe\xa8]\x14\xafS\xc3\xf0\n\xc9\xdeN\r\xe0]o\x01M\x177\x964\xd4-\xbbp00000"),
		[]byte("\x97\xdb\xdb\xdb\xdb0\xa10\xa1021"),
		[]byte("\x87\xa10\xdb\xdb\xdb\xdb\xdb\xdb\xdb\xdb\xdb\xdb\xdb00000000"),
		[]byte("\x81\xa1x\xc6\x7f\xff\xff\xff"),
		[]byte("\x81\xa1x\xdd\x7f\xff\xff\xff"),
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 200 {
		for _, in := range ins {
			var e Event
			if err := decodeEvent(in, &e); err == nil {
				t.Fatalf("%q decoded", in)
			}
		}
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Errorf("1,000 hostile events allocated %d bytes", got)
	}
}
