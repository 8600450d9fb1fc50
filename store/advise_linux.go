package store

import "golang.org/x/sys/unix"

const adviseSupported = true

// madviseRandom marks the length bytes of memory map from start
// MADV_RANDOM. It takes addresses, not a slice: the maps are Badger's, and
// the kernel checks them. A map Badger unmapped since /proc/self/maps was
// read (a flushed memtable's) is no error: there is nothing left to mark.
func madviseRandom(start, length uint64) error {
	_, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(length), unix.MADV_RANDOM)
	if errno != 0 && errno != unix.ENOMEM {
		return errno
	}
	return nil
}
