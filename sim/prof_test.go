package sim

import (
	"io"
	"testing"
)

func TestProfSeeds(t *testing.T) {
	for s := uint64(1); s <= 5; s++ {
		RunSeed(DefaultParams(), s, io.Discard)
	}
}
