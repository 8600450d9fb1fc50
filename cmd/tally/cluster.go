package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// runCluster is `tally cluster`: a local multi-region cluster of real
// `tally serve` processes on loopback, until ctx ends.
func runCluster(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tally cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	regions := fs.Int("regions", 3, "number of regions")
	nodes := fs.Int("nodes", 1, "nodes per region")
	dir := fs.String("dir", "", "folder for the nodes' data directories (default: a new temporary folder)")
	basePort := fs.Int("base-port", 0, "first port to use (each node takes 3 consecutive ports); 0 picks free ports")
	extra := fs.String("serve-flags", "", "extra flags passed to every tally serve, space separated")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *regions < 1 || *regions > 26 || *nodes < 1 || *nodes > 16 {
		fmt.Fprintln(stderr, "tally cluster: want 1-26 regions and 1-16 nodes per region")
		return 2
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "tally cluster: find own binary: %v\n", err)
		return 1
	}
	if *dir == "" {
		if *dir, err = os.MkdirTemp("", "tally-cluster-"); err != nil {
			fmt.Fprintf(stderr, "tally cluster: %v\n", err)
			return 1
		}
	}
	c, err := startCluster(ctx, clusterSpec{
		Exe: exe, Dir: *dir, Regions: *regions, Nodes: *nodes, BasePort: *basePort,
		Extra: strings.Fields(*extra), Log: stderr,
	})
	if err != nil {
		fmt.Fprintf(stderr, "tally cluster: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "tally cluster: %d regions × %d nodes, data under %s\n", *regions, *nodes, *dir)
	for _, n := range c.Nodes {
		fmt.Fprintf(stdout, "  region %-8s node %-12s http://%s  (pid %d)\n", n.Region, n.Name, n.HTTP, n.Pid())
	}
	if len(c.Nodes) > 0 {
		// A bare host:port: scripts pick the nodes' URLs out of this output.
		fmt.Fprintf(stdout, "Audit it: TALLY_ADMIN_TOKEN=%s tally audit --endpoints %s\n", c.admin, c.Nodes[0].HTTP)
	}
	fmt.Fprintln(stdout, "Ctrl-C stops every node.")
	<-ctx.Done()
	c.Stop(20 * time.Second)
	fmt.Fprintln(stdout, "tally cluster: stopped")
	return 0
}

// clusterSpec describes a local cluster.
type clusterSpec struct {
	Exe      string // the tally binary
	Dir      string
	Regions  int
	Nodes    int
	BasePort int
	Extra    []string  // more tally serve flags
	Log      io.Writer // where the nodes' stderr goes; nil discards
	// Place, if set, decides where region r's nodes run: the command prefix
	// that starts a process there (e.g. ip netns exec NS) and the address
	// they bind. Every place has its own port space, so ports are then fixed:
	// node i of a region takes BasePort+3i..BasePort+3i+2 (BasePort 0 means
	// placedBasePort). Nil runs every node here, on 127.0.0.1.
	Place func(region int) (wrap []string, host string)
}

// placedBasePort is the first port of placed nodes (see clusterSpec.Place).
const placedBasePort = 17000

// localCluster is a set of running tally serve processes.
type localCluster struct {
	spec   clusterSpec
	secret string
	key    string
	admin  string // every node's admin token (tally audit needs it)
	Nodes  []*clusterNode
}

// AdminToken is the admin bearer token every node of the cluster takes.
func (c *localCluster) AdminToken() string { return c.admin }

// clusterNode is one tally serve process of a local cluster.
type clusterNode struct {
	Region, Name       string
	HTTP, Gossip, Repl string
	Data               string
	Wrap               []string   // command prefix that places the process (clusterSpec.Place)
	mu                 sync.Mutex // protects cmd
	cmd                *exec.Cmd
	exited             chan struct{}
}

// regionName names region i: us, eu, ap, then r3, r4, ...
func regionName(i int) string {
	if names := []string{"us", "eu", "ap"}; i < len(names) {
		return names[i]
	}
	return fmt.Sprintf("r%d", i)
}

func startCluster(ctx context.Context, spec clusterSpec) (*localCluster, error) {
	secret, key, admin := make([]byte, 32), make([]byte, 32), make([]byte, 16)
	for _, b := range [][]byte{secret, key, admin} {
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
	}
	c := &localCluster{spec: spec, secret: hex.EncodeToString(secret), key: base64.StdEncoding.EncodeToString(key), admin: hex.EncodeToString(admin)}
	port := spec.BasePort
	next := func() (string, error) {
		if spec.BasePort == 0 {
			return freePort()
		}
		port++
		return fmt.Sprintf("127.0.0.1:%d", port-1), nil
	}
	for r := 0; r < spec.Regions; r++ {
		var host string
		placedPort := spec.BasePort
		if placedPort == 0 {
			placedPort = placedBasePort
		}
		for i := 0; i < spec.Nodes; i++ {
			n := &clusterNode{Region: regionName(r), Name: fmt.Sprintf("%s-%d", regionName(r), i+1)}
			if spec.Place != nil {
				n.Wrap, host = spec.Place(r)
			}
			var err error
			for _, p := range []*string{&n.HTTP, &n.Gossip, &n.Repl} {
				if spec.Place != nil {
					*p = net.JoinHostPort(host, fmt.Sprint(placedPort))
					placedPort++
					continue
				}
				if *p, err = next(); err != nil {
					return nil, err
				}
			}
			n.Data = filepath.Join(spec.Dir, n.Name)
			c.Nodes = append(c.Nodes, n)
		}
	}
	for _, n := range c.Nodes {
		err := c.launch(ctx, n)
		// Ports picked free a moment ago can be taken before the node binds
		// them (the gossip port also needs UDP): pick new ones and retry.
		for attempt := 1; err != nil && errors.Is(err, errExitedDuringStart) && spec.BasePort == 0 && spec.Place == nil && attempt < 5; attempt++ {
			for _, p := range []*string{&n.HTTP, &n.Gossip, &n.Repl} {
				if *p, err = next(); err != nil {
					break
				}
			}
			if err == nil {
				err = c.launch(ctx, n)
			}
		}
		if err != nil {
			c.Stop(10 * time.Second)
			return nil, err
		}
	}
	if err := c.awaitReady(ctx); err != nil {
		c.Stop(10 * time.Second)
		return nil, err
	}
	return c, nil
}

// errExitedDuringStart: a node process exited before it served HTTP.
var errExitedDuringStart = errors.New("exited during start")

// launch (re)starts node n and waits until it serves HTTP.
func (c *localCluster) launch(ctx context.Context, n *clusterNode) error {
	args := []string{"serve",
		"--region", n.Region, "--node-name", n.Name, "--data", n.Data,
		"--http", n.HTTP, "--gossip", n.Gossip, "--repl", n.Repl,
		"--cluster-secret", c.secret, "--gossip-key", c.key, "--admin-token", c.admin,
	}
	// Join every other node (the first first): any one that answers brings
	// the whole pool, and a restart still finds the pool when the nodes it
	// would otherwise join are down too (a whole region killed at once).
	var join []string
	for _, o := range c.Nodes {
		if o != n {
			join = append(join, o.Gossip)
		}
	}
	if len(join) > 0 {
		args = append(args, "--join", strings.Join(join, ","))
	}
	args = append(args, c.spec.Extra...)
	cmd := exec.Command(c.spec.Exe, args...)
	if len(n.Wrap) > 0 {
		cmd = exec.Command(n.Wrap[0], append(append(n.Wrap[1:len(n.Wrap):len(n.Wrap)], c.spec.Exe), args...)...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if c.spec.Log != nil {
		cmd.Stderr = &prefixWriter{prefix: "[" + n.Name + "] ", w: c.spec.Log}
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", n.Name, err)
	}
	exited := make(chan struct{})
	n.mu.Lock()
	n.cmd, n.exited = cmd, exited
	n.mu.Unlock()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			if !signalled && strings.HasPrefix(sc.Text(), "tally: listening on ") {
				close(ready)
				signalled = true
			}
		}
		cmd.Wait()
		close(exited)
	}()
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	select {
	case <-ready:
		return nil
	case <-exited:
		return fmt.Errorf("%s %w (see its log)", n.Name, errExitedDuringStart)
	case <-deadline.C:
		n.Kill()
		return fmt.Errorf("%s did not start within 60s", n.Name)
	case <-ctx.Done():
		n.Kill()
		return ctx.Err()
	}
}

// Pid is the node's process ID, 0 if not running.
func (n *clusterNode) Pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Kill sends SIGKILL to the node (a crash) and waits for it to exit.
func (n *clusterNode) Kill() { n.signal(syscall.SIGKILL, 30*time.Second) }

// Terminate sends SIGTERM and waits up to grace, then SIGKILL.
func (n *clusterNode) Terminate(grace time.Duration) {
	if !n.signal(syscall.SIGTERM, grace) {
		n.Kill()
	}
}

// signal sends sig to the process we started and waits up to wait for it to
// exit; it reports whether it did.
func (n *clusterNode) signal(sig syscall.Signal, wait time.Duration) bool {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return true
	}
	select {
	case <-exited:
		return true
	default:
	}
	cmd.Process.Signal(sig)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-exited:
		return true
	case <-t.C:
		return false
	}
}

// Stop terminates every node, gracefully first.
func (c *localCluster) Stop(grace time.Duration) {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.Terminate(grace) }()
	}
	wg.Wait()
}

// freePort returns a loopback address whose port was free a moment ago.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// prefixWriter prefixes each line written through it.
type prefixWriter struct {
	mu     sync.Mutex // protects w and partial lines
	prefix string
	w      io.Writer
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := strings.IndexByte(string(p.buf), '\n')
		if i < 0 {
			break
		}
		fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.buf[:i])
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}

// exitState says how the node's last process ended ("exit status 0",
// "signal: killed"), or "" while it runs.
func (n *clusterNode) exitState() string {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if cmd == nil {
		return "not started"
	}
	select {
	case <-exited: // Wait returned, so ProcessState is set
		return cmd.ProcessState.String()
	default:
		return ""
	}
}
