package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/httpapi"
	"github.com/tallyhq/tally/region"
	"github.com/tallyhq/tally/replication"
	"github.com/tallyhq/tally/replication/membership"
	"github.com/tallyhq/tally/replication/tcp"
)

// clusterFlags are the flags of tally serve that make it a cluster member.
type clusterFlags struct {
	nodeName, gossip, advertise, repl, join, secret, gossipKey string
	keyringFile                                                string
	syncInterval                                               time.Duration
	key                                                        []byte
}

// resolve fills defaults from the environment and checks the flags.
func (c *clusterFlags) resolve(regionName, httpAddr string) error {
	if c.gossip == "" {
		if c.join != "" {
			return errors.New("--join needs --gossip")
		}
		return nil
	}
	if c.secret == "" {
		c.secret = os.Getenv("TALLY_CLUSTER_SECRET")
	}
	if len(c.secret) < 16 {
		return errors.New("--gossip needs --cluster-secret (or TALLY_CLUSTER_SECRET) of at least 16 bytes")
	}
	if c.gossipKey == "" {
		c.gossipKey = os.Getenv("TALLY_GOSSIP_KEY")
	}
	if c.gossipKey != "" {
		k, err := base64.StdEncoding.DecodeString(c.gossipKey)
		if err != nil || (len(k) != 16 && len(k) != 24 && len(k) != 32) {
			return errors.New("--gossip-key: want base64 of 16, 24 or 32 bytes")
		}
		c.key = k
	}
	if c.nodeName == "" {
		host, _ := os.Hostname()
		_, port, _ := net.SplitHostPort(httpAddr)
		c.nodeName = fmt.Sprintf("%s-%s-%s", regionName, host, port)
	}
	if c.syncInterval <= 0 {
		return errors.New("--sync-interval must be positive")
	}
	return nil
}

// clusterMember is what joinCluster started.
type clusterMember struct {
	leave          func() error // leaves the pool and stops the transport
	membership     *membership.Membership
	transportStats func() httpapi.TransportStats
}

// joinCluster starts the replication transport, enables replication on the
// node, joins the Serf pool and keeps the node's peer list current.
func joinCluster(ctx context.Context, node *region.Node, cfg region.Config, c clusterFlags, httpAddr string, log *slog.Logger) (*clusterMember, error) {
	var tr *tcp.Transport
	tc := tcp.DefaultConfig(c.repl, []byte(c.secret))
	tc.Logger = log
	tr, err := tcp.Listen(tc, func(payload []byte) {
		if err := node.ReplicationReceive(payload); err != nil {
			log.Debug("replication message refused", "err", err)
		}
	})
	if err != nil {
		return nil, err
	}
	ec := replication.DefaultConfig(replication.NodeID(c.nodeName))
	ec.SyncInterval = c.syncInterval
	if err := node.EnableReplication(region.ReplicationConfig{Self: c.nodeName, Engine: ec, Transport: tr}); err != nil {
		tr.Close()
		return nil, err
	}
	m, err := membership.Start(membership.Config{
		NodeName: c.nodeName, BindAddr: c.gossip, AdvertiseAddr: c.advertise,
		Region: cfg.Region, ReplAddr: tr.Addr(), HTTPAddr: httpAddr,
		Replica: node.Identity().Replica.String(), GossipKey: c.key, KeyringFile: c.keyringFile, Logger: log,
	}, func(ms []membership.Member) { node.SetPeers(peersOf(ms)) })
	if err != nil {
		tr.Close()
		return nil, err
	}
	if c.join != "" {
		addrs := strings.Split(c.join, ",")
		if n, err := m.Join(addrs); err != nil {
			// Not fatal: the node serves its region alone and peers join it later.
			log.Warn("could not join the cluster yet", "join", addrs, "err", err)
		} else {
			log.Info("joined cluster", "contacted", n)
		}
	}
	// The peer list reaches the node only through onChange, from the one
	// goroutine that watches Serf: applying a snapshot here as well could
	// land after a newer list from there, and leave a live peer out of
	// replication until the next membership change (a rolling-restart
	// drill waited 60 s for such a peer).
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		node.RunReplication(ctx, c.syncInterval/2)
	}()
	leave := func() error {
		err := m.Leave()
		cancel()
		<-done
		return errors.Join(err, tr.Close())
	}
	stats := func() httpapi.TransportStats {
		s := tr.Stats()
		return httpapi.TransportStats{
			FramesSent: s.FramesSent, FramesReceived: s.FramesReceived, BytesSent: s.BytesSent, BytesReceived: s.BytesReceived,
			Dropped: s.Dropped, DialFailures: s.DialFailures,
			RejectedBadMAC: s.AuthFailures, RejectedOversize: s.Oversize, RefusedConns: s.RefusedConns,
		}
	}
	return &clusterMember{leave: leave, membership: m, transportStats: stats}, nil
}

func peersOf(ms []membership.Member) []region.Peer {
	out := make([]region.Peer, 0, len(ms))
	for _, m := range ms {
		p := region.Peer{
			Name: m.Name, Region: m.Region, ReplAddr: m.ReplAddr, HTTPAddr: m.HTTPAddr,
			Alive: m.Status == membership.StatusAlive,
		}
		if id, err := crdt.ParseReplicaID(m.Replica); err == nil {
			p.Replica = id
		}
		out = append(out, p)
	}
	return out
}
