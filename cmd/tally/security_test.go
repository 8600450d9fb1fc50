package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNodeWithoutSecretStaysOffTheDataPath starts a two-region cluster and
// a third tally serve that has the gossip key (so it joins the pool and is
// told about every peer) but not the cluster secret. Its views must never
// reach the others, theirs never reach it, and every frame it sends must be
// rejected and counted in the others' metrics.
func TestNodeWithoutSecretStaysOffTheDataPath(t *testing.T) {
	bin := buildTally(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := launchCluster(t, ctx, clusterSpec{
		Exe: bin, Dir: t.TempDir(), Regions: 2, Nodes: 1,
		Extra: []string{"--sync-interval", "50ms"},
	})
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()

	// The intruder: right gossip key, wrong cluster secret.
	ports := make([]string, 3)
	for i := range ports {
		var err error
		if ports[i], err = freePort(); err != nil {
			t.Fatal(err)
		}
	}
	intruder := exec.Command(bin, "serve", "--region", "xx", "--node-name", "intruder", "--data", filepath.Join(t.TempDir(), "intruder"),
		"--http", ports[0], "--gossip", ports[1], "--repl", ports[2], "--join", c.Nodes[0].Gossip,
		"--gossip-key", c.key, "--cluster-secret", "not-the-cluster-secret-at-all", "--sync-interval", "50ms")
	intruderLog := &lockedBuffer{}
	intruder.Stderr = intruderLog
	stdout, err := intruder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := intruder.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		io.Copy(io.Discard, stdout) //nolint:errcheck // drained only
		intruder.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		intruder.Process.Signal(syscall.SIGKILL) //nolint:errcheck // it may have exited
		<-exited
		if t.Failed() {
			t.Logf("intruder log:\n%s", intruderLog)
		}
	})
	intruderURL := "http://" + ports[0]

	await := func(what string, cond func() (bool, string)) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			ok, state := cond()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (%s)", what, state)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	rejected := func(n *clusterNode) float64 {
		text, err := getText(client, "http://"+n.HTTP+"/metrics")
		if err != nil {
			return -1
		}
		v, _ := metricValue(text, `tally_replication_frames_rejected_total{reason="bad_mac"}`)
		return v
	}
	// Gossip lets it in: the cluster's nodes try to replicate with it, and
	// it with them.
	await("the intruder's frames rejected by both nodes", func() (bool, string) {
		a, b := rejected(c.Nodes[0]), rejected(c.Nodes[1])
		return a > 0 && b > 0, fmt.Sprintf("rejected: %v, %v", a, b)
	})

	post := func(base, video, user string) {
		t.Helper()
		resp, err := client.Post(base+"/videos/"+video+"/views", "application/json", strings.NewReader(`{"userId":"`+user+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("view on %s: %s", base, resp.Status)
		}
	}
	count := func(base, video string) uint64 {
		t.Helper()
		var cr struct {
			ViewCount uint64 `json:"viewCount"`
		}
		text, err := getText(client, base+"/videos/"+video+"/views")
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(text), &cr); err != nil {
			t.Fatal(err)
		}
		return cr.ViewCount
	}
	post(intruderURL, "forged", "bot")
	post("http://"+c.Nodes[0].HTTP, "real", "alice")
	// The real view reaches the other real node...
	await("the real view replicated", func() (bool, string) {
		n := count("http://"+c.Nodes[1].HTTP, "real")
		return n == 1, fmt.Sprintf("count %d", n)
	})
	// ...and by then the intruder has sent its delta many times over (every
	// 50 ms), each frame rejected: the forged view is nowhere but at home.
	before := rejected(c.Nodes[0])
	await("more of the intruder's frames rejected", func() (bool, string) {
		n := rejected(c.Nodes[0])
		return n >= before+5, fmt.Sprintf("%v rejected", n)
	})
	for _, n := range c.Nodes {
		if got := count("http://"+n.HTTP, "forged"); got != 0 {
			t.Errorf("%s counts the intruder's view: %d", n.Name, got)
		}
	}
	if got := count(intruderURL, "real"); got != 0 {
		t.Errorf("the intruder got the cluster's data: count %d", got)
	}
	if got := count(intruderURL, "forged"); got != 1 {
		t.Errorf("the intruder's own count: %d", got)
	}
}

// getText reads a small answer.
func getText(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), nil
}

// metricValue finds one sample of the Prometheus text exposition.
func metricValue(text, series string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// TestServeTLS serves HTTPS with --tls-cert and --tls-key (a certificate
// made here), and audits the node over HTTPS with --tls-ca.
func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pool := writeSelfSigned(t, certFile, keyFile)

	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	var stderr lockedBuffer
	go func() {
		done <- runServeEnv(ctx, []string{"--in-memory", "--http", "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", keyFile,
			"--admin-token", "tls-test-admin-token"}, func(string) string { return "" }, pw, &stderr)
		pw.Close()
	}()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("tally serve exited %d\n%s", code, stderr.String())
		}
	}()
	sc := bufio.NewScanner(pr)
	var addr string
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "tally: listening on "); ok {
			addr = a
			break
		}
	}
	go io.Copy(io.Discard, pr) //nolint:errcheck // drain the rest
	if !strings.HasPrefix(addr, "https://127.0.0.1:") {
		t.Fatalf("listening line %q\n%s", addr, stderr.String())
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	resp, err := client.Post(addr+"/videos/tls-v/views", "application/json", strings.NewReader(`{"userId":"u"}`))
	if err != nil {
		t.Fatalf("HTTPS view: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Fatalf("HTTPS view: %s", resp.Status)
	}
	// Plain HTTP to the HTTPS listener gets nothing counted.
	if resp, err := http.Post("http://"+strings.TrimPrefix(addr, "https://")+"/videos/tls-v/views", "application/json", strings.NewReader(`{"userId":"w"}`)); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("a plain HTTP view was taken by the HTTPS listener")
		}
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.Link(certFile, caFile); err != nil {
		t.Fatal(err)
	}
	var out, errOut lockedBuffer
	code := runAuditEnv(ctx, []string{"--endpoints", addr, "--tls-ca", caFile, "--wait", "0", "-v"},
		func(k string) string {
			if k == "TALLY_ADMIN_TOKEN" {
				return "tls-test-admin-token"
			}
			return ""
		}, &out, &errOut)
	if code != auditOK || !strings.Contains(out.String(), "ok video tls-v: expected 1") {
		t.Fatalf("audit over HTTPS: exit %d\n%s%s", code, out.String(), errOut.String())
	}
}

// writeSelfSigned writes a self-signed certificate for 127.0.0.1 and its
// key, and returns a pool that trusts it.
func writeSelfSigned(t *testing.T, certFile, keyFile string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tally test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}
