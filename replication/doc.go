// Package replication is tally's anti-entropy protocol as a deterministic state
// machine: delta push along a per-peer cursor into a change log, and digest
// repair over hash buckets of the key space.
//
// The Engine owns no sockets, goroutines or clocks. The caller feeds it
//
//   - Changed or ChangedFrom (a key's new state is durable), Load (a key found
//     on disk at start),
//   - AddPeer / RemovePeer (membership, e.g. from Serf),
//   - Step (a message arrived) and Tick (time passed),
//
// and gets back a Ready: messages to send over an unreliable network (they may
// be lost, duplicated or reordered) and remote states to merge. Every input
// carries the current time; the engine never reads a clock. The same inputs
// always give the same outputs, byte for byte: maps are never iterated without
// sorting. This is what lets the server (TCP transport, Serf membership) and
// the deterministic simulator run the same protocol code.
//
// # Protocol
//
// Deltas. Every durable change of a key gets the next local sequence number;
// the change log holds each key once, at its latest sequence. For each peer
// the engine keeps a cursor: the peer durably holds everything we held up to
// that sequence (for the peer's current epoch). Every SyncInterval it ships
// Delta messages carrying the current states of the keys whose latest
// sequence lies in (FromSeq, ToSeq], up to MaxInflight unacknowledged deltas
// at a time, each bounded by MaxBatchKeys and MaxBatchBytes. The receiver
// merges them and, once the merge is durable, acknowledges the range; the
// cursor advances only over contiguously acknowledged ranges, so a lost delta
// is resent (after RetryTimeout, doubling while the peer is silent) and a
// duplicate is harmless (merge is idempotent). With nothing to ship, a
// heartbeat Delta (no entries, FromSeq == ToSeq == cursor) tells the peer our
// log head and what it has acknowledged, from which it measures its lag.
// Merges that change the receiver's state are reported by its node through
// Changed, get new sequence numbers there, and spread on: A→B→C converges
// while A and C cannot talk. A key known to hold, at a peer, exactly our
// state (it came from there: ChangedFrom; or the peer acknowledged it in a
// repair page) is not shipped to that peer.
//
// The change log is bounded by LogCapacity; the oldest keys are dropped. A
// peer whose cursor falls behind what was dropped can no longer be served
// from the log and is repaired by digest instead.
//
// Repair. The key space is split into Buckets hash buckets; a bucket's sum is
// the XOR over its keys of a fixed 64-bit hash of (key, canonical state
// encoding). The initiator sends its sums in a Digest; the responder answers
// with RepairData pages (Reply: true): page 0 lists the differing buckets,
// and the pages carry its states of the keys in them. Once the initiator has
// every page of the reply, it sends its own states of those keys
// (Reply: false), which by then include what it merged, so the responder
// takes them as they are and echoes nothing back. Every page with entries is
// acknowledged once durable and resent until it is; at most RepairWindow
// pages are unacknowledged per side. When one side's pages are all
// acknowledged, the other holds everything that side held when the digests
// were compared, and that side's cursor jumps to its log head of that moment:
// one session serves both directions. Equal digests cost the digest and one
// empty reply page. Repair runs on AddPeer, every RepairInterval, when a
// peer's cursor fell out of the log, and when a peer restarted (new epoch);
// while a repair brings a reset cursor up, deltas wait for it rather than
// replay the whole log. If both sides open a repair at once, the one with the
// smaller NodeID keeps its session and the other answers it.
//
// Epochs. Every message names the sender's epoch (its incarnation) and the
// receiver epoch the sender believes in. Data is merged whatever the epochs
// (merge is always safe); acknowledgements addressed to another incarnation of
// ours are ignored; a peer seen with a new epoch gets its cursor reset to 0 and
// a repair, since it may have lost state it had acknowledged. A message of an
// epoch below the peer's current one, while that one is still speaking, is
// refused as a straggler of a dead incarnation (ErrStaleEpoch).
//
// # Lag
//
// Status reports, per peer, how long ago we last knew we held everything in
// its log: when a Delta or heartbeat reached its head (ToSeq == Head) and
// started at or below what we had acknowledged. -1 means never.
//
// The Engine is not safe for concurrent use; the caller serialises calls.
package replication
