package replication

import (
	"errors"
	"fmt"
	"time"
)

// Config parameterises an Engine. DefaultConfig fills every field; New fills
// zero fields from it, so a caller may set only what it cares about.
type Config struct {
	// Self is this node's name in the cluster; every message it sends carries
	// it. At most MaxNodeIDBytes bytes, not empty.
	Self NodeID

	// Epoch names this incarnation of the engine; never 0, and different
	// from every earlier epoch of Self. Peers that see a new epoch reset
	// their cursor for us and repair. Use a value that increases across
	// restarts (the start time in unix nanoseconds): a peer then never takes
	// a delayed message of a dead incarnation for a restart. Random epochs
	// work too, but a restart that draws a smaller epoch is recognised only
	// after the old incarnation has been silent for 4·RetryTimeout.
	Epoch uint64

	// Buckets is the number of digest buckets, a power of two up to
	// MaxBuckets. A digest costs 8 bytes per bucket; a repair ships every key
	// of every differing bucket, so more buckets mean smaller repairs. Peers
	// with different values still interoperate (the larger side folds).
	// Default 1024: an 8 KiB digest, ~1000 keys per bucket at 1M keys.
	Buckets int

	// MaxBatchKeys caps the entries in one Delta or RepairData message, at
	// most MaxEntries. Default 512.
	MaxBatchKeys int

	// MaxBatchBytes caps the approximate encoded size of the entries of one
	// message, at most MaxBatchBytesLimit; a message holds at least one entry
	// even if that entry alone is larger. With the bucket list of a repair
	// reply and the header, an encoded message stays under MaxFrameBytes.
	// Default 256 KiB.
	MaxBatchBytes int

	// LogCapacity caps the keys held in the change log (about 60 bytes of
	// memory each). A peer whose cursor falls behind the dropped part is
	// repaired by digest. Default 1<<20.
	LogCapacity int

	// MaxInflight caps the unacknowledged Delta messages per peer; with
	// MaxBatchKeys it sets delta throughput to about
	// MaxInflight·MaxBatchKeys keys per round trip. 1 gives the simplest
	// stop-and-wait protocol. Default 8.
	MaxInflight int

	// RepairWindow caps the unacknowledged RepairData pages per repair stream.
	// Default 4 (about 1 MiB in flight per stream).
	RepairWindow int

	// SyncInterval is how often new deltas, or a heartbeat, are shipped to
	// each peer. It bounds replication delay from below and sets heartbeat
	// traffic (one small message per peer per interval). Default 100ms.
	SyncInterval time.Duration

	// RetryTimeout is how long an unacknowledged delta, repair page or digest
	// waits before it is resent. While a peer stays silent the wait doubles
	// on each timeout, up to 8·RetryTimeout. Default 2s.
	RetryTimeout time.Duration

	// RepairInterval is how often each peer is repaired by digest even when
	// nothing seems wrong (it catches what deltas cannot: lost state, bugs,
	// bit flips). Default 30s.
	RepairInterval time.Duration
}

// Limits of the protocol and the wire format. Decoders reject input beyond
// them before allocating.
const (
	MaxNodeIDBytes     = 256     // bytes in a NodeID
	MaxKeyPartBytes    = 1024    // bytes in a key's Video or Event (the API allows 128)
	MaxEntries         = 1 << 16 // entries in one message
	MaxBuckets         = 1 << 16 // digest buckets
	MaxBatchBytesLimit = 1 << 20 // largest allowed Config.MaxBatchBytes
	MaxFrameBytes      = 4 << 20 // largest encoded message
)

// DefaultConfig returns a Config for self with every field set to its default
// and Epoch 0, which the caller must set.
func DefaultConfig(self NodeID) Config {
	return Config{
		Self:           self,
		Buckets:        1024,
		MaxBatchKeys:   512,
		MaxBatchBytes:  256 << 10,
		LogCapacity:    1 << 20,
		MaxInflight:    8,
		RepairWindow:   4,
		SyncInterval:   100 * time.Millisecond,
		RetryTimeout:   2 * time.Second,
		RepairInterval: 30 * time.Second,
	}
}

// ErrConfig is wrapped by New's errors for an invalid Config.
var ErrConfig = errors.New("replication: invalid config")

// withDefaults returns c with zero fields taken from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig(c.Self)
	if c.Buckets == 0 {
		c.Buckets = d.Buckets
	}
	if c.MaxBatchKeys == 0 {
		c.MaxBatchKeys = d.MaxBatchKeys
	}
	if c.MaxBatchBytes == 0 {
		c.MaxBatchBytes = d.MaxBatchBytes
	}
	if c.LogCapacity == 0 {
		c.LogCapacity = d.LogCapacity
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = d.MaxInflight
	}
	if c.RepairWindow == 0 {
		c.RepairWindow = d.RepairWindow
	}
	if c.SyncInterval == 0 {
		c.SyncInterval = d.SyncInterval
	}
	if c.RetryTimeout == 0 {
		c.RetryTimeout = d.RetryTimeout
	}
	if c.RepairInterval == 0 {
		c.RepairInterval = d.RepairInterval
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Self == "" || len(c.Self) > MaxNodeIDBytes:
		return fmt.Errorf("%w: Self must be 1..%d bytes, got %d", ErrConfig, MaxNodeIDBytes, len(c.Self))
	case c.Epoch == 0:
		return fmt.Errorf("%w: Epoch must not be 0", ErrConfig)
	case c.Buckets < 1 || c.Buckets > MaxBuckets || c.Buckets&(c.Buckets-1) != 0:
		return fmt.Errorf("%w: Buckets must be a power of two in 1..%d, got %d", ErrConfig, MaxBuckets, c.Buckets)
	case c.MaxBatchKeys < 1 || c.MaxBatchKeys > MaxEntries:
		return fmt.Errorf("%w: MaxBatchKeys must be in 1..%d, got %d", ErrConfig, MaxEntries, c.MaxBatchKeys)
	case c.MaxBatchBytes < 1 || c.MaxBatchBytes > MaxBatchBytesLimit:
		return fmt.Errorf("%w: MaxBatchBytes must be in 1..%d, got %d", ErrConfig, MaxBatchBytesLimit, c.MaxBatchBytes)
	case c.LogCapacity < 1:
		return fmt.Errorf("%w: LogCapacity must be positive, got %d", ErrConfig, c.LogCapacity)
	case c.MaxInflight < 1:
		return fmt.Errorf("%w: MaxInflight must be positive, got %d", ErrConfig, c.MaxInflight)
	case c.RepairWindow < 1:
		return fmt.Errorf("%w: RepairWindow must be positive, got %d", ErrConfig, c.RepairWindow)
	case c.SyncInterval <= 0 || c.RetryTimeout <= 0 || c.RepairInterval <= 0:
		return fmt.Errorf("%w: SyncInterval, RetryTimeout and RepairInterval must be positive", ErrConfig)
	}
	return nil
}
