//go:build unix

package main

import "syscall"

// syncDisks has the kernel write every dirty page out and waits (sync(2)):
// what an earlier run, or the build before the first, left to write back
// then cannot land on the disk during the next run, slowing its fsyncs.
func syncDisks() { syscall.Sync() }
