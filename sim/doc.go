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
// claims are node-local). A client sends views, shares (--shares, a fraction
// of its events) and like toggles (--likes: a like of a video it has not
// liked, else an unlike; half of them go back to a video it liked or unliked
// before, so like, unlike, like again happens). A client that gets no answer
// within ClientTimeout, or finds its node down, opens a circuit breaker on
// that node and resends the event to the nearest other region. A view or
// share may then be counted by two nodes (measured as doubleCounted), and a
// like or unlike made as the same transition by two regions; the claim rule
// must take every such double count back, so that replicas converge to
// exactly one count per view and one step per transition.
//
// # Phases and invariants
//
// The safety phase runs the workload and the faults for Duration. Then every
// fault stops: partitions heal, crashed nodes restart, loss and duplication
// end. In the liveness phase every replica must converge within
// ConvergeWithin. Checked throughout:
//
//   - no acknowledged event is lost (sync durability): an event is
//     acknowledged only once the batch holding it is durable, and every
//     durable counted view or share is in the reference the replicas must
//     converge to;
//   - the view and share counts a node has ever made (Value + Compensated:
//     its value goes down only by a compensation) never go backwards, across
//     crashes and restarts too (reads serve durable state in both modes; in
//     async mode only the count returned with an acknowledgement, which
//     includes unsynced events, may go back after a crash, and acknowledged
//     events may be lost: measured as ackedLost);
//   - no node ever shows more counts made than events durably counted;
//   - a node counts a (video, event, user, dedup window) at most once;
//   - a node's like count of a video is the number of users it says like it
//     (Liked), so never below zero.
//
// Converged (the liveness condition) means, on every replica:
//
//   - views and shares equal the reference: exactly once across regions;
//   - likes agree: the same like count and Liked answer for every user who
//     ever liked the video, the same like counter (ΣP and ΣN), whose value
//     ΣP − ΣN equals the like count (each transition counted once, each
//     concurrent duplicate taken back once: likes ≥ 0 everywhere), holding
//     every like and unlike made (ΣP + ΣN at least the transitions counted);
//   - Σ buckets = total: for every video and event type, the minute, hour
//     and day series over every bucket any node counted in sum to the
//     counter's ΣP − ΣN;
//   - unique viewers: UniqueViewers equals the estimate of the simulator's
//     own sketch of every (video, user) view counted anywhere;
//   - trending: Top(view, 1h) lists the videos by reference count, highest
//     first, ties by video ID, on every node whose window covers every
//     minute counted in (a run spans under two minutes), asked at least 1 s
//     of the node's clock after its previous top list (cached for 1 s).
//
// Once converged: the raw event logs hold one compensation per view or
// share counted twice; each like counter holds exactly the likes and unlikes
// made plus one step per logged like compensation (ΣP + ΣN); and with sync
// durability, a user whose likes and unlikes of a video all went to one
// node, once each, and were acknowledged, ends everywhere in the state of the
// last of them that node applied (the pairs touched by a failover are left
// out: the claim rule, not the client's order, decides those).
//
// A view the node answered counted:true and whose batch became durable is
// one slot increment. The reference count of a video is the number of
// distinct (video, user, window) among those: a view counted by two nodes
// after a failover must end up counted once everywhere. Shares are the same
// with their own claims.
package sim
