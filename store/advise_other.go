//go:build !linux

package store

import "errors"

const adviseSupported = false

func madviseRandom(start, length uint64) error {
	return errors.New("madvise: not on this system")
}
