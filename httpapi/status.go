package httpapi

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tallyhq/tally/region"
)

// statusResponse answers GET /v1/status.
type statusResponse struct {
	Name       string `json:"name"` // cluster name when it replicates, else --node-name
	Region     string `json:"region"`
	Replica    string `json:"replica"`
	Durability string `json:"durability"`
	// DedupWindowMs is the node's dedup window: what an auditor needs to
	// recompute counts from the raw event log.
	DedupWindowMs int64             `json:"dedupWindowMs"`
	Ready         bool              `json:"ready"`       // as GET /readyz answers
	ReadyReason   string            `json:"readyReason"` // why (not) ready
	Counters      int               `json:"countersInMemory"`
	Replication   replicationStatus `json:"replication"`
}

type replicationStatus struct {
	Enabled    bool         `json:"enabled"`
	Self       string       `json:"self,omitempty"`
	Head       uint64       `json:"head"`
	LogKeys    int          `json:"logKeys"`
	Keys       int          `json:"keys"`
	SendErrors uint64       `json:"sendErrors"`
	Regions    []regionJSON `json:"regions"`
	Peers      []peerJSON   `json:"peers"`
}

type regionJSON struct {
	Region     string  `json:"region"`
	Peers      int     `json:"peers"`
	LagSeconds float64 `json:"lagSeconds"` // -1: not yet in contact
}

type peerJSON struct {
	Name             string  `json:"name"`
	Region           string  `json:"region"`
	ReplAddr         string  `json:"replAddr"`
	HTTPAddr         string  `json:"httpAddr"`
	Replica          string  `json:"replica,omitempty"`
	Epoch            uint64  `json:"epoch"`
	Cursor           uint64  `json:"cursor"`
	Behind           uint64  `json:"behind"`
	Inflight         int     `json:"inflight"`
	LagSeconds       float64 `json:"lagSeconds"` // -1: not yet in contact
	Repairing        bool    `json:"repairing"`
	Repairs          uint64  `json:"repairs"`
	MessagesSent     uint64  `json:"messagesSent"`
	BytesSent        uint64  `json:"bytesSent"`
	MessagesReceived uint64  `json:"messagesReceived"`
	LastHeard        *string `json:"lastHeard"`
}

func (s *Server) status(c echo.Context) error {
	st := s.node.Stats()
	cs := s.node.ClusterStatus()
	ready, why := s.ready.check()
	out := statusResponse{
		Name: s.nodeName(), DedupWindowMs: st.DedupWindow.Milliseconds(),
		Region: st.Region, Replica: st.ReplicaID.String(), Durability: string(st.Durability),
		Ready: ready, ReadyReason: why, Counters: st.Counters,
		Replication: replicationStatus{
			Enabled: cs.Enabled, Self: string(cs.Engine.Self), Head: cs.Engine.Head,
			LogKeys: cs.Engine.LogKeys, Keys: cs.Engine.Keys, SendErrors: cs.SendErrors,
			Regions: []regionJSON{}, Peers: []peerJSON{},
		},
	}
	for _, r := range cs.Regions {
		out.Replication.Regions = append(out.Replication.Regions, regionJSON{Region: r.Region, Peers: r.Peers, LagSeconds: r.LagSeconds})
	}
	for _, p := range cs.Peers {
		pj := peerJSON{
			Name: string(p.PeerStatus.Peer), Region: p.Region, ReplAddr: p.ReplAddr, HTTPAddr: p.HTTPAddr,
			Epoch: p.Epoch, Cursor: p.Cursor, Behind: p.Behind, Inflight: p.Inflight, LagSeconds: p.LagSeconds,
			Repairing: p.Repairing, Repairs: p.Repairs, MessagesSent: p.MessagesSent, BytesSent: p.BytesSent,
			MessagesReceived: p.MessagesReceived,
		}
		if p.Replica != 0 {
			pj.Replica = p.Replica.String()
		}
		if !p.LastHeard.IsZero() {
			t := p.LastHeard.UTC().Format(time.RFC3339Nano)
			pj.LastHeard = &t
		}
		out.Replication.Peers = append(out.Replication.Peers, pj)
	}
	return c.JSON(http.StatusOK, out)
}

// clusterCollector exports replication state at scrape time.
type clusterCollector struct {
	node                             *region.Node
	lag, regionLag, behind, inflight *prometheus.Desc
	sent, bytes, received, repairs   *prometheus.Desc
	sendErrors                       *prometheus.Desc
	peerSendErrors, recvBytes        *prometheus.Desc
	recvRefused                      *prometheus.Desc
}

func newClusterCollector(n *region.Node) *clusterCollector {
	peer := []string{"peer", "region"}
	return &clusterCollector{
		node:       n,
		lag:        prometheus.NewDesc("tally_replication_lag_seconds", "Age of the newest complete state held from each peer (-1: never in contact).", peer, nil),
		regionLag:  prometheus.NewDesc("tally_replication_region_lag_seconds", "Freshest lag among a region's peers (-1: never in contact).", []string{"region"}, nil),
		behind:     prometheus.NewDesc("tally_replication_behind_changes", "Local changes not yet acknowledged by each peer.", peer, nil),
		inflight:   prometheus.NewDesc("tally_replication_inflight_deltas", "Deltas awaiting acknowledgement, per peer.", peer, nil),
		sent:       prometheus.NewDesc("tally_replication_messages_sent_total", "Replication messages produced for each peer.", peer, nil),
		bytes:      prometheus.NewDesc("tally_replication_bytes_sent_total", "Approximate encoded bytes produced for each peer.", peer, nil),
		received:   prometheus.NewDesc("tally_replication_messages_received_total", "Replication messages received from each peer.", peer, nil),
		repairs:    prometheus.NewDesc("tally_replication_repairs_total", "Digest repairs completed with each peer.", peer, nil),
		sendErrors: prometheus.NewDesc("tally_replication_send_errors_total", "Messages the transport refused (queue full, circuit open).", nil, nil),
		peerSendErrors: prometheus.NewDesc("tally_replication_peer_send_errors_total",
			"Messages to each peer the transport refused (queue full, circuit open).", peer, nil),
		recvBytes: prometheus.NewDesc("tally_replication_bytes_received_total", "Encoded bytes received from each peer.", peer, nil),
		recvRefused: prometheus.NewDesc("tally_replication_messages_refused_total",
			"Messages from each peer the engine refused (stale epoch, misrouted, malformed).", peer, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.lag, c.regionLag, c.behind, c.inflight, c.sent, c.bytes, c.received, c.repairs, c.sendErrors, c.peerSendErrors, c.recvBytes, c.recvRefused} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	cs := c.node.ClusterStatus()
	if !cs.Enabled {
		return
	}
	for _, p := range cs.Peers {
		l := []string{string(p.PeerStatus.Peer), p.Region}
		ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, p.LagSeconds, l...)
		ch <- prometheus.MustNewConstMetric(c.behind, prometheus.GaugeValue, float64(p.Behind), l...)
		ch <- prometheus.MustNewConstMetric(c.inflight, prometheus.GaugeValue, float64(p.Inflight), l...)
		ch <- prometheus.MustNewConstMetric(c.sent, prometheus.CounterValue, float64(p.MessagesSent), l...)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(p.BytesSent), l...)
		ch <- prometheus.MustNewConstMetric(c.received, prometheus.CounterValue, float64(p.MessagesReceived), l...)
		ch <- prometheus.MustNewConstMetric(c.repairs, prometheus.CounterValue, float64(p.Repairs), l...)
		ch <- prometheus.MustNewConstMetric(c.peerSendErrors, prometheus.CounterValue, float64(p.SendErrors), l...)
		ch <- prometheus.MustNewConstMetric(c.recvBytes, prometheus.CounterValue, float64(p.RecvBytes), l...)
		ch <- prometheus.MustNewConstMetric(c.recvRefused, prometheus.CounterValue, float64(p.RecvRefused), l...)
	}
	for _, r := range cs.Regions {
		ch <- prometheus.MustNewConstMetric(c.regionLag, prometheus.GaugeValue, r.LagSeconds, r.Region)
	}
	ch <- prometheus.MustNewConstMetric(c.sendErrors, prometheus.CounterValue, float64(cs.SendErrors))
}
