package sim

import (
	"time"

	"github.com/tallyhq/tally/region"
)

// Membership stands in for Serf: after a crash, restart or region isolation
// the other nodes learn of it after a detection delay, and then from the
// state of the world at that moment (a node that crashed and came back
// within the delay was never seen dead, as with gossip). Gossip goes around
// one-way and pairwise cuts, so only whole-region isolation hides nodes.

const (
	detectMin = 500 * time.Millisecond
	detectMax = 3 * time.Second
)

func (s *Sim) membershipChanged() {
	s.after(s.rMember.Between(detectMin, detectMax), s.refreshMembership)
}

// refreshMembership gives every live node its current view of the cluster.
func (s *Sim) refreshMembership() {
	for _, nd := range s.nodes {
		if nd.up {
			nd.n.SetPeers(s.peersFor(nd))
		}
	}
}

// peersFor is the membership as nd sees it now.
func (s *Sim) peersFor(nd *node) []region.Peer {
	peers := make([]region.Peer, 0, len(s.nodes)-1)
	for _, o := range s.nodes {
		if o == nd {
			continue
		}
		peers = append(peers, region.Peer{
			Name:     o.name,
			Region:   s.regions[o.region],
			ReplAddr: o.addr,
			Replica:  o.replica,
			Alive:    o.up && !s.isolatedBetween(nd, o) && s.flapped[o.idx] == 0,
		})
	}
	return peers
}

func (s *Sim) isolatedBetween(a, b *node) bool {
	return a.region != b.region && (s.isolated[a.region] > 0 || s.isolated[b.region] > 0)
}
