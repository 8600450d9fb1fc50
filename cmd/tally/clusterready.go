package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// clusterReadyWithin bounds how long startCluster and Start wait for nodes
// to report ready.
const clusterReadyWithin = 60 * time.Second

// Start (re)starts node n and waits until it is ready: it serves HTTP and
// GET /readyz answers 200, so it has synced with a peer (a node that joins is
// ready only then, or once it found no peer for --alone-after).
func (c *localCluster) Start(ctx context.Context, n *clusterNode) error {
	if err := c.launch(ctx, n); err != nil {
		return err
	}
	return c.awaitReady(ctx, n)
}

// awaitReady waits until each of nodes (every node if none is given)
// answers GET /readyz with 200. A new cluster's nodes are launched first and
// awaited together: the first one is ready only once the others joined it.
func (c *localCluster) awaitReady(ctx context.Context, nodes ...*clusterNode) error {
	if len(nodes) == 0 {
		nodes = c.Nodes
	}
	ctx, cancel := context.WithTimeout(ctx, clusterReadyWithin)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var waiting []string
		for _, n := range nodes {
			n.mu.Lock()
			exited := n.exited
			n.mu.Unlock()
			select {
			case <-exited:
				return fmt.Errorf("%s exited before it was ready (see its log)", n.Name)
			default:
			}
			if err := nodeIsReady(ctx, client, n.HTTP); err != nil {
				waiting = append(waiting, fmt.Sprintf("%s (%v)", n.Name, err))
			}
		}
		if len(waiting) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nodes not ready within %v: %s", clusterReadyWithin, strings.Join(waiting, ", "))
		case <-tick.C:
		}
	}
}

// nodeIsReady is nil if the node serving HTTP at addr answers /readyz with 200.
func nodeIsReady(ctx context.Context, client *http.Client, addr string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	if err != nil {
		return fmt.Errorf("readiness request: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("readiness: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("readyz answered %d", resp.StatusCode)
	}
	return nil
}
