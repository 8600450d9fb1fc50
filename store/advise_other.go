//go:build !linux

package store

import (
	"errors"
	"os"
)

const adviseSupported = false

func madviseRandom(start, length uint64) error {
	return errors.New("madvise: not on this system")
}

// fdatasync writes f to the device (fsync where fdatasync is not offered).
func fdatasync(f *os.File) error { return f.Sync() }
