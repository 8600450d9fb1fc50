package store

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/tallyhq/tally/crdt"
)

const uncleanReason = "unclean shutdown with async durability"

// openIdentity opens the store in dir, loads its identity, optionally marks it
// clean, and closes it again (cleanly as far as Badger is concerned).
func openIdentity(t *testing.T, dir string, async, markClean bool) Identity {
	t.Helper()
	s, closeStore := openStore(t, dir)
	id, err := s.OpenIdentity(async)
	if err != nil {
		t.Fatalf("OpenIdentity(%v): %v", async, err)
	}
	if id.Replica == 0 {
		t.Fatalf("OpenIdentity returned replica 0")
	}
	if markClean {
		if err := s.MarkClean(); err != nil {
			t.Fatalf("MarkClean: %v", err)
		}
	}
	closeStore()
	return id
}

// retiredReplicas reads the retired replica IDs of the store in dir.
func retiredReplicas(t *testing.T, dir string) []crdt.ReplicaID {
	t.Helper()
	s, closeStore := openStore(t, dir)
	defer closeStore()
	ids, err := s.RetiredReplicas()
	if err != nil {
		t.Fatalf("RetiredReplicas: %v", err)
	}
	return ids
}

func TestOpenIdentity(t *testing.T) {
	type step struct {
		async, markClean bool
		// want: "new" (fresh directory), "same" (previous replica kept) or
		// "unclean" (a new replica replacing the previous one).
		want string
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"new directory", []step{{false, false, "new"}}},
		{"sync reopen keeps id", []step{{false, false, "new"}, {false, false, "same"}, {false, false, "same"}}},
		{"async clean shutdown keeps id", []step{{true, true, "new"}, {true, true, "same"}, {false, false, "same"}}},
		{"async unclean shutdown takes new id", []step{{true, false, "new"}, {false, false, "unclean"}, {false, false, "same"}}},
		{"async unclean then async", []step{{false, false, "new"}, {true, false, "same"}, {true, false, "unclean"}, {true, true, "unclean"}, {true, true, "same"}}},
		{"sync open clears dirty marker", []step{{true, false, "new"}, {false, false, "unclean"}, {true, true, "same"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			seen := map[crdt.ReplicaID]bool{}
			var prev crdt.ReplicaID
			var retired []crdt.ReplicaID
			for i, st := range tt.steps {
				id := openIdentity(t, dir, st.async, st.markClean)
				switch st.want {
				case "new":
					if id.Reason != "new data directory" || id.Previous != 0 {
						t.Fatalf("step %d: %+v, want a new replica for a new data directory", i, id)
					}
				case "same":
					if id != (Identity{Replica: prev}) {
						t.Fatalf("step %d: %+v, want replica %v kept with no reason", i, id, prev)
					}
				case "unclean":
					if id.Reason != uncleanReason || id.Previous != prev || id.Replica == prev {
						t.Fatalf("step %d: %+v, want a new replica replacing %v after an unclean shutdown", i, id, prev)
					}
					retired = append(retired, prev)
				}
				if got := retiredReplicas(t, dir); !slices.Equal(got, retired) {
					t.Fatalf("step %d: retired replicas %v, want %v", i, got, retired)
				}
				if st.want != "same" && seen[id.Replica] {
					t.Fatalf("step %d: replica %v reused", i, id.Replica)
				}
				seen[id.Replica] = true
				prev = id.Replica
			}
		})
	}
}

func TestOpenIdentityInMemory(t *testing.T) {
	s := memStore(t)
	id, err := s.OpenIdentity(false)
	if err != nil || id.Reason != "new data directory" || id.Replica == 0 {
		t.Fatalf("OpenIdentity = %+v, %v", id, err)
	}
	again, err := s.OpenIdentity(false)
	if err != nil || again != (Identity{Replica: id.Replica}) {
		t.Fatalf("second OpenIdentity = %+v, %v; want %v kept", again, err, id.Replica)
	}
}

func TestFormatVersion(t *testing.T) {
	dir := t.TempDir()
	s, closeStore := openStore(t, dir)
	v, ok, err := s.getUint64(metaFormat)
	if err != nil || !ok || v != formatVersion {
		t.Fatalf("format key after Open = %d, %v, %v; want %d", v, ok, err, formatVersion)
	}
	closeStore()

	// The current version reopens fine.
	_, closeStore = openStore(t, dir)
	closeStore()

	// A newer version is refused, and the refusal releases the directory.
	s, closeStore = openStore(t, dir)
	write(t, s, Mutation{Key: metaFormat, Value: binary.BigEndian.AppendUint64(nil, formatVersion+1)})
	closeStore()
	for range 2 {
		s2, err := Open(DefaultOptions(dir))
		if err == nil {
			s2.Close()
			t.Fatal("Open of a newer format succeeded")
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("format %d", formatVersion+1)) {
			t.Fatalf("Open of a newer format: %v; want it to name the format", err)
		}
	}
}

func TestFormatVersionCorrupt(t *testing.T) {
	dir := t.TempDir()
	s, closeStore := openStore(t, dir)
	write(t, s, Mutation{Key: metaFormat, Value: []byte{1, 2, 3}})
	closeStore()
	if s2, err := Open(DefaultOptions(dir)); err == nil {
		s2.Close()
		t.Fatal("Open with a 3-byte format value succeeded")
	}
}

func TestOpenIdentityCorruptReplica(t *testing.T) {
	s := memStore(t)
	write(t, s, Mutation{Key: metaReplica, Value: []byte("short")})
	if id, err := s.OpenIdentity(false); err == nil {
		t.Fatalf("OpenIdentity over a corrupt replica key = %+v, want an error", id)
	}
}

func TestNewReplicaIDAvoidsPrevious(t *testing.T) {
	var s Store
	for range 100 {
		id, err := s.newReplicaID(42)
		if err != nil || id == 0 || id == 42 {
			t.Fatalf("newReplicaID(42) = %v, %v", id, err)
		}
	}
	// A deterministic source is used, skipping 0 and the previous ID.
	seq := []crdt.ReplicaID{0, 42, 7}
	s.newID = func() crdt.ReplicaID { id := seq[0]; seq = seq[1:]; return id }
	if id, err := s.newReplicaID(42); err != nil || id != 7 {
		t.Fatalf("newReplicaID with a source = %v, %v; want 7", id, err)
	}
}

func TestSyncAndSize(t *testing.T) {
	s, _ := openStore(t, t.TempDir())
	write(t, s, Mutation{Key: []byte("x-key"), Value: []byte("value")})
	if err := s.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if lsm, vlog := s.Size(); lsm < 0 || vlog < 0 {
		t.Fatalf("Size = %d, %d", lsm, vlog)
	}
}
