//go:build !linux

package main

import (
	"errors"
	"io"
)

// netnsSupported reports why the drill cannot use network namespaces here.
func netnsSupported() (bool, string) {
	return false, "network namespaces exist on Linux only"
}

// newNetnsNet is not available outside Linux.
func newNetnsNet(int, io.Writer) (drillNet, error) {
	return nil, errors.New("netns: network namespaces exist on Linux only")
}
