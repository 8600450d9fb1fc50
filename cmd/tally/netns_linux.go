//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// netnsNet is the drill's network when it may use network namespaces: each
// region in its own namespace, wired by one veth pair to a bridge in the root
// namespace, where the drill itself runs:
//
//	root ns:  bridge tdr<pid>b 10.A.B.1/24
//	            ├── veth tdr<pid>h0 ══ drill0 10.A.B.10  in ns tally-drill-<pid>-us
//	            ├── veth tdr<pid>h1 ══ drill0 10.A.B.11  in ns tally-drill-<pid>-eu
//	            └── veth tdr<pid>h2 ══ drill0 10.A.B.12  in ns tally-drill-<pid>-ap
//
// Cutting region r sets its root-side veth down: no packet reaches the region
// or leaves it (its nodes still talk among themselves inside the namespace);
// healing sets it up again. Names carry the drill's PID so that parallel
// drills never collide; link names are kept under the kernel's 15 bytes,
// hence the short "tdr" prefix. Close removes everything it created, in
// reverse order, and is safe to call more than once.
type netnsNet struct {
	ip      string // path of the ip tool
	log     io.Writer
	bridge  string
	subnet  string   // "10.A.B"
	ns      []string // per region
	veth    []string // root-side veth per region
	mu      sync.Mutex
	cleanup []func() error // undo steps, in creation order
}

// netnsSupported reports whether the drill may build namespaces here, and
// why not.
func netnsSupported() (bool, string) {
	if os.Geteuid() != 0 {
		return false, "not running as root (network namespaces need CAP_NET_ADMIN and CAP_SYS_ADMIN)"
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		return false, "the ip tool (iproute2) is not installed"
	}
	if out, err := exec.Command(ip, "netns", "list").CombinedOutput(); err != nil {
		return false, fmt.Sprintf("ip netns is unavailable: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return true, ""
}

// newNetnsNet builds the namespaces, the bridge and one veth per region. On
// error, what was already built is removed.
func newNetnsNet(regions int, log io.Writer) (drillNet, error) {
	n, err := buildNetns(regions, log)
	if err != nil {
		return nil, err
	}
	return n, nil
}

var _ drillNet = (*netnsNet)(nil)

func buildNetns(regions int, log io.Writer) (_ *netnsNet, err error) {
	ip, err := exec.LookPath("ip")
	if err != nil {
		return nil, fmt.Errorf("netns: find the ip tool: %w", err)
	}
	pid := os.Getpid()
	subnet, err := freeSubnet(pid)
	if err != nil {
		return nil, err
	}
	n := &netnsNet{ip: ip, log: log, bridge: fmt.Sprintf("tdr%db", pid), subnet: subnet}
	defer func() {
		if err != nil {
			err = errors.Join(err, n.Close())
		}
	}()
	if err := n.run("link", "add", n.bridge, "type", "bridge"); err != nil {
		return nil, err
	}
	n.undo(func() error { return n.run("link", "del", n.bridge) })
	for _, args := range [][]string{
		{"addr", "add", subnet + ".1/24", "dev", n.bridge},
		{"link", "set", n.bridge, "up"},
	} {
		if err := n.run(args...); err != nil {
			return nil, err
		}
	}
	for r := range regions {
		ns := fmt.Sprintf("tally-drill-%d-%s", pid, regionName(r))
		veth := fmt.Sprintf("tdr%dh%d", pid, r)
		if err := n.run("netns", "add", ns); err != nil {
			return nil, err
		}
		n.undo(func() error { return n.run("netns", "del", ns) })
		// Deleting one end of a veth pair deletes both.
		if err := n.run("link", "add", veth, "type", "veth", "peer", "name", "drill0", "netns", ns); err != nil {
			return nil, err
		}
		n.undo(func() error { return n.run("link", "del", veth) })
		n.ns, n.veth = append(n.ns, ns), append(n.veth, veth)
		for _, args := range [][]string{
			{"link", "set", veth, "master", n.bridge},
			{"link", "set", veth, "up"},
			{"-n", ns, "addr", "add", n.Host(r) + "/24", "dev", "drill0"},
			{"-n", ns, "link", "set", "drill0", "up"},
			{"-n", ns, "link", "set", "lo", "up"},
		} {
			if err := n.run(args...); err != nil {
				return nil, err
			}
		}
	}
	return n, nil
}

// freeSubnet picks a 10.A.B.0/24 (A in 200..249) that no interface of the
// root namespace uses, starting from one derived from pid.
func freeSubnet(pid int) (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("netns: list interface addresses: %w", err)
	}
	const span = 50 * 256
	for i := range 256 {
		k := (pid + i) % span
		_, cand, _ := net.ParseCIDR(fmt.Sprintf("10.%d.%d.0/24", 200+k/256, k%256))
		used := false
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && (cand.Contains(ipn.IP) || ipn.Contains(cand.IP)) {
				used = true
				break
			}
		}
		if !used {
			return fmt.Sprintf("10.%d.%d", 200+k/256, k%256), nil
		}
	}
	return "", errors.New("netns: no free 10.200-249.x.0/24 subnet for the drill network")
}

func (n *netnsNet) undo(f func() error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cleanup = append(n.cleanup, f)
}

// run runs one ip command, bounded in time.
func (n *netnsNet) run(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, n.ip, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("netns: ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Name describes the network for the report.
func (n *netnsNet) Name() string {
	return fmt.Sprintf("network namespaces %s on bridge %s (%s.0/24)", strings.Join(n.ns, ", "), n.bridge, n.subnet)
}

// Host is the address of region r's namespace.
func (n *netnsNet) Host(r int) string { return fmt.Sprintf("%s.%d", n.subnet, 10+r) }

// Place runs region r's processes in its namespace (clusterSpec.Place).
func (n *netnsNet) Place(r int) (wrap []string, host string) {
	return []string{n.ip, "netns", "exec", n.ns[r]}, n.Host(r)
}

// Cut takes region r off the network.
func (n *netnsNet) Cut(r int) error { return n.run("link", "set", n.veth[r], "down") }

// Heal puts region r back on the network.
func (n *netnsNet) Heal(r int) error { return n.run("link", "set", n.veth[r], "up") }

// Close removes the veths, namespaces and bridge, newest first. Processes
// must be stopped before: a namespace lives on while a process is in it.
func (n *netnsNet) Close() error {
	n.mu.Lock()
	steps := n.cleanup
	n.cleanup = nil
	n.mu.Unlock()
	var errs []error
	for i := len(steps) - 1; i >= 0; i-- {
		if err := steps[i](); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		fmt.Fprintf(n.log, "tally drill: cleanup: %v\n", errors.Join(errs...))
	}
	return errors.Join(errs...)
}
