package crdt

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ClaimKey names a claim: one user's view of one video in one window (ingest
// unix ms / window length, on the ingesting node's clock). Event is empty for
// views, so that view claims keep the names they had before other event types
// existed; for another deduplicated event type it names the type, and for
// likes (Event "like") Window is the number of the like/unlike transition.
type ClaimKey struct {
	Video  string
	Event  string
	User   string
	Window uint64
}

// claimPrefix starts the Event part of a claim's replication Key. Event types
// are validated to [A-Za-z0-9_.:-], so no counter key starts with it, and
// user IDs cannot contain claimSep.
const (
	claimPrefix = '!'
	claimSep    = '@'
)

// claimEventSep separates the event type from the user in a claim of an event
// other than a view; IDs cannot contain it.
const claimEventSep = '/'

// Key is the name under which the claim set of k replicates alongside the
// counters: Video is k.Video and Event is "!" + user + "@" + window for a
// view, "!" + event + "/" + user + "@" + window for other event types.
func (k ClaimKey) Key() Key {
	return Key{Video: k.Video, Event: string(claimPrefix) + k.Subject() + string(claimSep) + strconv.FormatUint(k.Window, 10)}
}

// Subject is the user, prefixed with "event/" for an event type other than
// a view: the part of the claim's name (and of its store key) between the
// video and the window.
func (k ClaimKey) Subject() string {
	if k.Event == "" {
		return k.User
	}
	return k.Event + string(claimEventSep) + k.User
}

// SplitSubject is the inverse of Subject.
func SplitSubject(s string) (event, user string) {
	if i := strings.IndexByte(s, claimEventSep); i >= 0 {
		return s[:i], s[i+1:]
	}
	return "", s
}

// IsClaim reports whether k names a claim set rather than a counter.
func (k Key) IsClaim() bool { return len(k.Event) > 0 && k.Event[0] == claimPrefix }

// ParseClaimKey is the inverse of ClaimKey.Key; ok is false if k does not
// name a claim.
func ParseClaimKey(k Key) (ck ClaimKey, ok bool) {
	if !k.IsClaim() {
		return ClaimKey{}, false
	}
	i := strings.LastIndexByte(k.Event, claimSep)
	if i < 2 {
		return ClaimKey{}, false
	}
	w, err := strconv.ParseUint(k.Event[i+1:], 10, 64)
	if err != nil {
		return ClaimKey{}, false
	}
	ev, user := SplitSubject(k.Event[1:i])
	if user == "" || strings.IndexByte(user, claimEventSep) >= 0 {
		return ClaimKey{}, false
	}
	return ClaimKey{Video: k.Video, Event: ev, User: user, Window: w}, true
}

// Stages of a replica's claim, kept in its slot's Count (so merge, by max,
// only moves a claim forward).
const (
	StageClaimed     = 1 // the replica counted the view in its P slot
	StageCompensated = 2 // it lost to a smaller claim and added 1 to its N slot
)

// MaxClaimants bounds the replicas in one claim set read from outside: a view
// is claimed by at most one replica per region that received a retry of it.
const MaxClaimants = 64

// ErrBadClaims is wrapped by errors about a state that is not a claim set.
var ErrBadClaims = errors.New("crdt: not a claim set")

// Claims is the replicated record of every replica that counted one
// (video, user, window): per replica, its stage and the ingest time of its
// claim. The winner is the claim with the smallest (ingest time, replica);
// every other claimant compensates once, by adding 1 to its own N slot of the
// counter and moving its claim to StageCompensated in the same durable write.
// Claims travel and are stored as a PNCounter whose P slots are the claims
// (Count = stage, Updated = ingest ms), so merge is the slot-wise max.
type Claims struct {
	g GCounter
}

// NewClaims is the claim set holding only r's claim made at ingestMs.
func NewClaims(r ReplicaID, ingestMs int64) Claims {
	return Claims{g: NewGCounter(Slot{Replica: r, Count: StageClaimed, Updated: ingestMs})}
}

// ClaimsFromState checks that st is a claim set and returns it.
func ClaimsFromState(st PNCounter) (Claims, error) {
	if st.N.Len() != 0 {
		return Claims{}, fmt.Errorf("%w: %d N slots", ErrBadClaims, st.N.Len())
	}
	if st.P.Len() > MaxClaimants {
		return Claims{}, fmt.Errorf("%w: %d claimants, at most %d", ErrBadClaims, st.P.Len(), MaxClaimants)
	}
	for _, s := range st.P.slots {
		if s.Count != StageClaimed && s.Count != StageCompensated {
			return Claims{}, fmt.Errorf("%w: replica %s at stage %d", ErrBadClaims, s.Replica, s.Count)
		}
	}
	return Claims{g: st.P.Clone()}, nil
}

// State is c as a PNCounter, for replication and storage.
func (c Claims) State() PNCounter { return PNCounter{P: c.g.Clone()} }

// Len is the number of claimants.
func (c Claims) Len() int { return c.g.Len() }

// IsZero reports whether c holds no claim.
func (c Claims) IsZero() bool { return c.g.Len() == 0 }

// Merge folds o into c and reports whether c changed.
func (c *Claims) Merge(o Claims) bool { return c.g.Merge(o.g) }

// Equal reports whether c and o hold the same claims at the same stages.
func (c Claims) Equal(o Claims) bool { return c.g.Equal(o.g) }

// Clone returns a deep copy.
func (c Claims) Clone() Claims { return Claims{g: c.g.Clone()} }

// Winner returns the winning claim: the smallest (ingest ms, replica).
func (c Claims) Winner() (r ReplicaID, ingestMs int64, ok bool) {
	for i, s := range c.g.slots {
		if i == 0 || s.Updated < ingestMs || s.Updated == ingestMs && s.Replica < r {
			r, ingestMs = s.Replica, s.Updated
		}
	}
	return r, ingestMs, c.g.Len() > 0
}

// IngestMs returns the ingest time of r's claim (0 if r has none).
func (c Claims) IngestMs(r ReplicaID) int64 { return c.g.Get(r).Updated }

// Stage returns r's stage: 0 if r has no claim.
func (c Claims) Stage(r ReplicaID) uint64 { return c.g.Get(r).Count }

// Owes reports whether r claimed, lost, and has not compensated yet.
func (c Claims) Owes(r ReplicaID) bool {
	if c.Stage(r) != StageClaimed {
		return false
	}
	w, _, _ := c.Winner()
	return w != r
}

// Compensate moves r's claim to StageCompensated if r owes a compensation,
// and reports whether it did: the caller must then add 1 to r's N slot of
// the counter in the same durable write.
func (c *Claims) Compensate(r ReplicaID) bool {
	if !c.Owes(r) {
		return false
	}
	s := c.g.Get(r)
	s.Count = StageCompensated
	c.g.mergeSlot(s)
	return true
}

// String formats c for logs and test failures.
func (c Claims) String() string { return "claims" + c.g.String() }
