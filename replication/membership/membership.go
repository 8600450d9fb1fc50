// Package membership adapts Serf to tally: one gossip pool for all regions,
// in which every tally node advertises its region, replication address and
// HTTP address as member tags.
//
// Members without tally's tags (a plain `serf agent`, another tool sharing the
// pool) are ignored: they are never reported and never break a node.
// Gossip is encrypted when a key is given (16, 24 or 32 bytes: AES-128/192/256).
//
// Key rotation uses Serf's key manager: a key is installed on every member,
// then made primary (used to encrypt) everywhere, then the old one removed;
// members decrypt with any installed key, so gossip never stops. With
// Config.KeyringFile every member persists its keyring there, so a member
// that restarts mid-rotation comes back with the keys it had (the file wins
// over Config.GossipKeys once it exists).
//
// Serf user events are not used for data: they are capped at 512 bytes and
// best-effort. Counts travel over the replication transport.
package membership

import (
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

// Tag keys tally sets on its Serf members.
const (
	TagRegion   = "tally.region"
	TagRepl     = "tally.repl"
	TagHTTP     = "tally.http"
	TagReplica  = "tally.replica"
	TagProtocol = "tally.proto"
	// protocolVersion is the replication protocol this code speaks.
	protocolVersion = "1"
	// maxTagBytes is Serf's limit on the encoded tags of one member.
	maxTagBytes = 512
)

// Status is a member's liveness as Serf sees it.
type Status string

// Member statuses.
const (
	StatusAlive   Status = "alive"
	StatusLeaving Status = "leaving"
	StatusLeft    Status = "left"
	StatusFailed  Status = "failed"
)

// Member is one tally node in the pool.
type Member struct {
	Name     string
	Region   string
	ReplAddr string // host:port of its replication transport
	HTTPAddr string // host:port of its HTTP API
	Replica  string // its current replica ID (16 hex digits), to attribute counts to regions
	Status   Status
}

// Config configures a Membership.
type Config struct {
	// NodeName is unique in the pool.
	NodeName string
	// BindAddr is the host:port Serf gossips on (TCP and UDP); port 0 picks one.
	BindAddr string
	// AdvertiseAddr, if set, is the host:port other members reach us at.
	AdvertiseAddr string
	// Region, ReplAddr, HTTPAddr and Replica are advertised in our tags.
	Region, ReplAddr, HTTPAddr, Replica string
	// GossipKey encrypts gossip (16, 24 or 32 bytes); nil leaves it clear.
	GossipKey []byte
	// GossipKeys are more keys members may encrypt with, accepted for
	// decryption (a rotation in progress). The primary key is GossipKey, or
	// the first of these if GossipKey is nil.
	GossipKeys [][]byte
	// KeyringFile, if set, persists the keyring: read at start when it
	// exists (then it replaces GossipKey and GossipKeys), written when it
	// does not and keys are given, and rewritten on every rotation step.
	KeyringFile string
	// LAN selects memberlist's LAN timings; otherwise loopback-tuned local
	// timings (fast failure detection for tests and `tally cluster`).
	LAN bool
	// Logger receives Serf's log lines at debug level. Nil discards them.
	Logger *slog.Logger
}

// reconnectInterval is how often Serf dials members it has marked failed.
const reconnectInterval = 5 * time.Second

// reconcileInterval is how often the member list is read from Serf again
// even without an event: Serf changes a member's status on some messages
// without emitting one (a leave intent marks it leaving, a refuting join
// marks it alive again), and a list that stayed stale would keep a live
// peer out of replication until the next membership change.
const reconcileInterval = time.Second

// Membership is a running Serf member. It is safe for concurrent use.
type Membership struct {
	serf     *serf.Serf
	events   chan serf.Event
	onChange func([]Member)
	done     chan struct{}

	mu      sync.Mutex // protects members
	members []Member
}

// Start joins (or founds) the pool. onChange is called, from one goroutine,
// with the full list of tally members (ourselves included) whenever it
// changes. Call Join to contact existing members.
func Start(cfg Config, onChange func([]Member)) (*Membership, error) {
	tags := map[string]string{
		TagRegion: cfg.Region, TagRepl: cfg.ReplAddr, TagHTTP: cfg.HTTPAddr, TagReplica: cfg.Replica, TagProtocol: protocolVersion,
	}
	if n := tagSize(tags); n > maxTagBytes {
		return nil, fmt.Errorf("membership: tags take %d bytes, Serf allows %d", n, maxTagBytes)
	}
	host, port, err := splitHostPort(cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("membership: bind address: %w", err)
	}
	ml := memberlist.DefaultLocalConfig()
	if cfg.LAN {
		ml = memberlist.DefaultLANConfig()
	}
	ml.BindAddr, ml.BindPort = host, port
	if cfg.AdvertiseAddr != "" {
		ah, ap, err := splitHostPort(cfg.AdvertiseAddr)
		if err != nil {
			return nil, fmt.Errorf("membership: advertise address: %w", err)
		}
		ml.AdvertiseAddr, ml.AdvertisePort = ah, ap
	}
	keys, err := keyring(cfg)
	if err != nil {
		return nil, err
	}
	if len(keys) > 0 {
		kr, err := memberlist.NewKeyring(keys[1:], keys[0])
		if err != nil {
			return nil, fmt.Errorf("membership: gossip keyring: %w", err)
		}
		ml.Keyring = kr
		ml.GossipVerifyIncoming, ml.GossipVerifyOutgoing = true, true
	}
	logger := log.New(io.Discard, "", 0)
	if cfg.Logger != nil {
		logger = slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug)
	}
	ml.Logger = logger

	sc := serf.DefaultConfig()
	sc.NodeName = cfg.NodeName
	sc.Tags = tags
	sc.MemberlistConfig = ml
	sc.Logger = logger
	// Try failed members again every few seconds rather than Serf's 30 s:
	// after a partition heals, replication can resume only once gossip has
	// the other side back (the failover drill saw ~25 s of waiting for it).
	// A tally pool is a few dozen nodes, so the extra dials are cheap.
	sc.ReconnectInterval = reconnectInterval
	if len(keys) > 0 {
		sc.KeyringFile = cfg.KeyringFile
	}
	m := &Membership{
		events:   make(chan serf.Event, 256),
		onChange: onChange,
		done:     make(chan struct{}),
	}
	sc.EventCh = m.events
	s, err := serf.Create(sc)
	if err != nil {
		return nil, fmt.Errorf("membership: start serf: %w", err)
	}
	m.serf = s
	go m.watch()
	return m, nil
}

// Join contacts existing members at addrs (host:port) and returns how many answered.
func (m *Membership) Join(addrs []string) (int, error) {
	if len(addrs) == 0 {
		return 0, nil
	}
	n, err := m.serf.Join(addrs, true)
	if err != nil {
		return n, fmt.Errorf("membership: join %v: %w", addrs, err)
	}
	return n, nil
}

// Members returns the tally members known now, sorted by name.
func (m *Membership) Members() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.members)
}

// LocalName is this member's name.
func (m *Membership) LocalName() string { return m.serf.LocalMember().Name }

// GossipAddr is the host:port this member gossips on.
func (m *Membership) GossipAddr() string {
	lm := m.serf.LocalMember()
	return net.JoinHostPort(lm.Addr.String(), strconv.Itoa(int(lm.Port)))
}

// Leave announces our departure and shuts Serf down.
func (m *Membership) Leave() error {
	err := m.serf.Leave()
	if serr := m.serf.Shutdown(); serr != nil {
		err = errors.Join(err, serr)
	}
	<-m.done
	if err != nil {
		return fmt.Errorf("membership: leave: %w", err)
	}
	return nil
}

func (m *Membership) watch() {
	defer close(m.done)
	shutdown := m.serf.ShutdownCh()
	m.refresh()
	tick := time.NewTicker(reconcileInterval)
	defer tick.Stop()
	for {
		select {
		case e := <-m.events:
			if _, ok := e.(serf.MemberEvent); ok {
				m.refresh()
			}
		case <-tick.C:
			m.refresh()
		case <-shutdown:
			return
		}
	}
}

// refresh rebuilds the member list from Serf and reports it if it changed.
func (m *Membership) refresh() {
	var out []Member
	for _, sm := range m.serf.Members() {
		if mem, ok := fromSerf(sm); ok {
			out = append(out, mem)
		}
	}
	slices.SortFunc(out, func(a, b Member) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	m.mu.Lock()
	changed := !slices.Equal(out, m.members)
	m.members = out
	m.mu.Unlock()
	if changed && m.onChange != nil {
		m.onChange(slices.Clone(out))
	}
}

// fromSerf converts a Serf member, rejecting those without tally's tags.
func fromSerf(sm serf.Member) (Member, bool) {
	if sm.Tags[TagProtocol] != protocolVersion || sm.Tags[TagRegion] == "" || sm.Tags[TagRepl] == "" {
		return Member{}, false
	}
	if _, _, err := net.SplitHostPort(sm.Tags[TagRepl]); err != nil {
		return Member{}, false
	}
	st := StatusAlive
	switch sm.Status {
	case serf.StatusLeaving:
		st = StatusLeaving
	case serf.StatusLeft:
		st = StatusLeft
	case serf.StatusFailed:
		st = StatusFailed
	case serf.StatusAlive:
	default:
		return Member{}, false
	}
	return Member{Name: sm.Name, Region: sm.Tags[TagRegion], ReplAddr: sm.Tags[TagRepl], HTTPAddr: sm.Tags[TagHTTP], Replica: sm.Tags[TagReplica], Status: st}, true
}

func splitHostPort(addr string) (string, int, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q", ps)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

// tagSize approximates Serf's encoding of tags (msgpack map of strings).
func tagSize(tags map[string]string) int {
	n := 3
	for k, v := range tags {
		n += len(k) + len(v) + 10
	}
	return n
}
