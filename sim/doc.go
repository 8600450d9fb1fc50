// Package sim is tally's deterministic simulator: N regions × M nodes of the
// real region and replication code in one process, on one goroutine, over a
// simulated clock and network, with faults, a client workload and invariant
// checks (in the style of TigerBeetle's VOPR and FoundationDB's simulator).
//
// # Determinism
//
// Every random choice comes from one seed, split into sub-seeds per
// subsystem (network, faults, workload, clocks, disks, membership, replica
// IDs), so that a change in how one subsystem draws does not reshuffle the
// others. Time is a simulated duration since a fixed start; each node's clock
// is that plus its own skew, and the nodes read nothing else (region.Config
// Clock; the replication engine takes time from the node). Nothing is
// iterated in map order. The same seed and parameters therefore give the same
// output, byte for byte; the tests check it. Badger runs in memory with its
// own goroutines, but only as storage: nothing it does affects what is
// printed.
//
// # Model
//
// Storage: each node has an in-memory store; the node's group committer is
// manual, and the simulator steps it at simulated fsync times (FsyncMin to
// FsyncMax after the first write that needs it, later during a disk stall).
// A crash abandons the node without Close: the batch not yet stepped is lost,
// exactly as an un-fsynced tail. A restart opens a new node on the same store.
//
// Network: a message takes its link's base latency (about 1 ms inside a
// region, 20-120 ms between regions) plus exponential jitter; in the safety
// phase it may be lost, duplicated or held back (reordered). Partitions cut
// directed links (a region isolated, one direction between two regions, a
// region pair) or clog them (messages wait and are released when the link is
// restored, one link at a time). Membership is the simulator's: a crash,
// restart or region isolation reaches the other nodes' SetPeers after a
// detection delay, as Serf's would.
//
// Nodes crash (the un-stepped batch is lost), shut down cleanly (Close:
// everything flushed; async keeps its replica ID), or go down with their whole
// region, and restart later; their disks stall (no group commit for a while);
// their clocks start skewed and jump. Clock jumps move the node's whole clock,
// the replication engine's timers included: time.Now carries a monotonic
// reading that shields a production engine from wall-clock steps, which a
// simulated clock cannot, so the simulator is harsher there (keep --max-jump
// well under --converge-within). Membership may also wrongly declare a live
// node failed for a while (flap).
//
// Clients: each user has a home region and sticks to one node there (dedup
// claims are node-local). A client that gets no answer within ClientTimeout,
// or finds its node down, opens a circuit breaker on that node and resends
// the view to the nearest other region. The view may then be counted by two
// nodes (measured as doubleCounted); the claim rule must take every such double count
// back, so that replicas converge to exactly one count per view.
//
// # Phases and invariants
//
// The safety phase runs the workload and the faults for Duration. Then every
// fault stops: partitions heal, crashed nodes restart, loss and duplication
// end. In the liveness phase every replica must reach the reference count of
// every video within ConvergeWithin. Checked throughout:
//
//   - no acknowledged view is lost (sync durability): a view is acknowledged
//     only once the batch holding it is durable, and every durable counted
//     view is in the reference the replicas must converge to;
//   - the counts of a video a node has ever made (Value + Compensated: its
//     value goes down only by a compensation) never go backwards, across
//     crashes and restarts too (reads serve durable state in both modes; in
//     async mode only the count returned with an acknowledgement, which
//     includes unsynced views, may go back after a crash, and acknowledged
//     views may be lost: measured as ackedLost);
//   - no node ever shows more counts made than views durably counted;
//   - a node counts a (video, user, dedup window) at most once;
//   - after the heal, every replica equals the reference within
//     ConvergeWithin: exactly once across regions.
//
// A view a node answered counted:true and whose batch became durable is one
// slot increment. The reference count of a video is the number of distinct
// (video, user, window) among those: a view counted by two nodes after a
// failover must end up counted once everywhere.
package sim
