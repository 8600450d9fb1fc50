package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// datasync makes f's data durable, and of its metadata what reading the data
// back needs (fdatasync(2)).
func datasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }
