package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A minimal W3C WebDriver client over chromedriver's HTTP API: enough to
// drive the dashboard in headless Chromium without a library.

// Where the Debian packages chromium and chromium-driver put the browser and
// its driver; PATH is searched too.
const (
	chromiumPath     = "/usr/bin/chromium"
	chromedriverPath = "/usr/bin/chromedriver"
)

// findBrowser returns chromium and chromedriver, or skips the test naming
// the missing Debian package.
func findBrowser(t *testing.T) (browser, driver string) {
	t.Helper()
	find := func(path, name, pkg string) string {
		if _, err := os.Stat(path); err == nil {
			return path
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		t.Skipf("%s not found: install the Debian package %s (make test does when run as root: scripts/test-deps.sh)", name, pkg)
		return ""
	}
	return find(chromiumPath, "chromium", "chromium"), find(chromedriverPath, "chromedriver", "chromium-driver")
}

// webDriver is one chromedriver process with one browser session.
type webDriver struct {
	t       *testing.T
	base    string // http://127.0.0.1:PORT/session/ID
	client  *http.Client
	cmd     *exec.Cmd
	exited  chan struct{}
	session string
}

// startBrowser starts chromedriver and a headless Chromium session; both end
// with the test.
func startBrowser(t *testing.T, width, height int) *webDriver {
	t.Helper()
	browser, driver := findBrowser(t)
	addr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	var logs bytes.Buffer
	cmd := exec.Command(driver, "--port="+port, "--allowed-ips=127.0.0.1")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chromedriver: %v", err)
	}
	wd := &webDriver{t: t, client: &http.Client{Timeout: 60 * time.Second}, cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(wd.exited) }()
	t.Cleanup(func() {
		if wd.session != "" {
			wd.call(http.MethodDelete, "", nil, nil)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-wd.exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // the driver's group: it and its browser
			<-wd.exited
		}
		if t.Failed() {
			t.Logf("chromedriver output:\n%s", logs.String())
		}
	})

	root := "http://127.0.0.1:" + port
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := wd.client.Get(root + "/status")
		if err == nil {
			var st struct {
				Value struct{ Ready bool } `json:"value"`
			}
			json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if st.Value.Ready {
				break
			}
		}
		select {
		case <-wd.exited:
			t.Fatalf("chromedriver exited: %v\n%s", cmd.ProcessState, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("chromedriver not ready within 30s: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	args := []string{"--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--disable-extensions", "--disable-background-networking", "--hide-scrollbars",
		fmt.Sprintf("--window-size=%d,%d", width, height)}
	if os.Geteuid() == 0 {
		args = append(args, "--no-sandbox") // Chromium refuses to run its sandbox as root
	}
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName":             "chrome",
		"goog:chromeOptions":      map[string]any{"binary": browser, "args": args},
		"pageLoadStrategy":        "normal",
		"unhandledPromptBehavior": "dismiss",
	}}}
	var created struct {
		SessionID string `json:"sessionId"`
	}
	wd.base = root + "/session"
	if err := wd.call(http.MethodPost, "", caps, &created); err != nil {
		t.Fatalf("new browser session: %v", err)
	}
	wd.session = created.SessionID
	wd.base = root + "/session/" + created.SessionID
	return wd
}

// call sends one WebDriver command; path is relative to the session. The
// answer's "value" is decoded into out if not nil.
func (wd *webDriver) call(method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("webdriver %s %s: encode: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, wd.base+path, body)
	if err != nil {
		return fmt.Errorf("webdriver %s %s: %w", method, path, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := wd.client.Do(req)
	if err != nil {
		return fmt.Errorf("webdriver %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("webdriver %s %s: read: %w", method, path, err)
	}
	var env struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return fmt.Errorf("webdriver %s %s: decode %.200s: %w", method, path, raw, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("webdriver %s %s: %d %.500s", method, path, resp.StatusCode, env.Value)
	}
	if out != nil {
		if err := json.Unmarshal(env.Value, out); err != nil {
			return fmt.Errorf("webdriver %s %s: decode value %.200s: %w", method, path, env.Value, err)
		}
	}
	return nil
}

// open navigates to url and waits for the page load.
func (wd *webDriver) open(url string) {
	wd.t.Helper()
	if err := wd.call(http.MethodPost, "/url", map[string]string{"url": url}, nil); err != nil {
		wd.t.Fatal(err)
	}
}

// script runs a synchronous script in the page and decodes its result.
func (wd *webDriver) script(js string, out any, args ...any) error {
	if args == nil {
		args = []any{}
	}
	return wd.call(http.MethodPost, "/execute/sync", map[string]any{"script": js, "args": args}, out)
}

// element finds the element matching a CSS selector and returns its ID.
func (wd *webDriver) element(css string) string {
	wd.t.Helper()
	var el map[string]string
	if err := wd.call(http.MethodPost, "/element", map[string]string{"using": "css selector", "value": css}, &el); err != nil {
		wd.t.Fatal(err)
	}
	for _, id := range el { // the key is the W3C element identifier
		return id
	}
	wd.t.Fatalf("no element ID for %s", css)
	return ""
}

// click clicks the element matching css.
func (wd *webDriver) click(css string) {
	wd.t.Helper()
	if err := wd.call(http.MethodPost, "/element/"+wd.element(css)+"/click", map[string]any{}, nil); err != nil {
		wd.t.Fatal(err)
	}
}

// typeInto clears the element matching css and types text into it.
func (wd *webDriver) typeInto(css, text string) {
	wd.t.Helper()
	id := wd.element(css)
	if err := wd.call(http.MethodPost, "/element/"+id+"/clear", map[string]any{}, nil); err != nil {
		wd.t.Fatal(err)
	}
	if err := wd.call(http.MethodPost, "/element/"+id+"/value", map[string]any{"text": text}, nil); err != nil {
		wd.t.Fatal(err)
	}
}

// screenshot saves a PNG of the page to path.
func (wd *webDriver) screenshot(path string) {
	wd.t.Helper()
	var b64 string
	if err := wd.call(http.MethodGet, "/screenshot", nil, &b64); err != nil {
		wd.t.Fatal(err)
	}
	png, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		wd.t.Fatalf("decode screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		wd.t.Fatalf("save screenshot: %v", err)
	}
	wd.t.Logf("screenshot: %s", path)
}
