package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tallyhq/tally/region"
)

func TestServeHelpDocumentsEveryFlag(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := runServeEnv(context.Background(), []string{"--help"}, func(string) string { return "" }, &out, &errOut); code != 0 {
		t.Fatalf("tally serve --help: exit %d, stderr %s", code, errOut.String())
	}
	help := out.String()
	cfg := region.DefaultConfig()
	var ss serveSettings
	var cl clusterFlags
	serveFlags(&cfg, &ss, &cl).VisitAll(func(f *flag.Flag) {
		i := strings.Index(help, "\n  --"+f.Name+" ")
		if i < 0 {
			i = strings.Index(help, "\n  --"+f.Name+"\n")
		}
		if i < 0 {
			t.Errorf("--help does not list --%s", f.Name)
			return
		}
		entry := help[i+1:]
		if j := strings.Index(entry[1:], "\n  --"); j >= 0 {
			entry = entry[:j+1]
		}
		if !strings.Contains(entry, "default: ") || !strings.Contains(entry, "env "+envName(f.Name)) {
			t.Errorf("--help entry of --%s lacks its default or environment variable:\n%s", f.Name, entry)
		}
	})
	for _, want := range []string{"default: 24h; env TALLY_DEDUP_WINDOW", `default: ":8080"; env TALLY_HTTP`, "default: 10; env TALLY_USER_RATE", "views per second", "TALLY_CONFIG"} {
		if !strings.Contains(help, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("--help:\n%s", help)
	}
}

func TestServeSettingsPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tally.conf")
	conf := `# a comment
region = file-region
user-rate = 3
user-burst = 7
log-format = json
data = "/var/lib/tally data"
`
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TALLY_USER_RATE": "4", "TALLY_DEDUP_WINDOW": "1h", "TALLY_REGION": "env-region"}
	cfg := region.DefaultConfig()
	var ss serveSettings
	var cl clusterFlags
	fs := serveFlags(&cfg, &ss, &cl)
	if err := fs.Parse([]string{"--region", "flag-region"}); err != nil {
		t.Fatal(err)
	}
	from, err := applySettings(fs, func(k string) string { return env[k] }, file, "config")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"region: the command line wins", cfg.Region, "flag-region"},
		{"user-rate: the environment beats the file", cfg.UserRate, 4.0},
		{"dedup-window: from the environment", cfg.DedupWindow, time.Hour},
		{"user-burst: from the file", cfg.UserBurst, 7},
		{"log-format: from the file", ss.logFormat, "json"},
		{"data: a quoted value", cfg.DataDir, "/var/lib/tally data"},
		{"max-pending: the default", cfg.MaxPending, region.DefaultConfig().MaxPending},
		{"user-rate came from", from["user-rate"], "TALLY_USER_RATE"},
		{"user-burst came from", from["user-burst"], file},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.what, c.got, c.want)
		}
	}
}

func TestServeSettingsErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "deny.txt"), []byte("user:bot\nhost:1.2.3.4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, conf string
		env        map[string]string
		want       string
	}{
		{"unknown setting", "regoin = us\n", nil, `:1: unknown setting "regoin"`},
		{"not name = value", "# ok\nregion us\n", nil, ":2: want name = value"},
		{"set twice", "region = a\nregion = b\n", nil, ":2: region set again (first on line 1)"},
		{"config in the file", "config = other.conf\n", nil, `unknown setting "config"`},
		{"bad value in the file", "user-rate = fast\n", nil, `:1: user-rate = "fast"`},
		{"bad value in the environment", "", map[string]string{"TALLY_DEDUP_WINDOW": "a day"}, `TALLY_DEDUP_WINDOW="a day"`},
		{"short admin token", "", map[string]string{"TALLY_ADMIN_TOKEN": "short"}, "--admin-token: want at least 16 characters"},
		{"certificate without key", "tls-cert = cert.pem\n", nil, "--tls-cert and --tls-key go together"},
		{"peer CA without TLS", "tls-peer-ca = ca.pem\n", nil, "--tls-peer-ca needs"},
		{"missing certificate", "tls-cert = /nonexistent/cert.pem\ntls-key = /nonexistent/key.pem\n", nil, "load --tls-cert"},
		{"no in-flight budget", "max-inflight = 0\n", nil, "must be positive"},
		{"no header timeout", "read-header-timeout = 0s\n", nil, "must be positive"},
		{"missing deny list", "deny-list = /nonexistent/deny.txt\n", nil, "deny list"},
		{"bad deny list", "deny-list = " + filepath.Join(dir, "deny.txt") + "\n", nil, "deny list line 2"},
	} {
		t.Run(c.name, func(t *testing.T) {
			file := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".conf")
			if err := os.WriteFile(file, []byte(c.conf), 0o644); err != nil {
				t.Fatal(err)
			}
			var out, errOut bytes.Buffer
			code := runServeEnv(context.Background(), []string{"--config", file, "--in-memory"}, func(k string) string { return c.env[k] }, &out, &errOut)
			if code != 2 || !strings.Contains(errOut.String(), c.want) {
				t.Fatalf("exit %d, stderr %q; want exit 2 and %q", code, errOut.String(), c.want)
			}
		})
	}
}

func TestAdvertisedHTTP(t *testing.T) {
	for _, c := range []struct{ listen, explicit, advertise, gossip, want string }{
		{"127.0.0.1:8080", "", "", "127.0.0.1:7946", "127.0.0.1:8080"},
		{"[::]:8080", "", "", "10.0.0.5:7946", "10.0.0.5:8080"},
		{"0.0.0.0:8080", "", "192.0.2.7:7946", "0.0.0.0:7946", "192.0.2.7:8080"},
		{"[::]:8080", "", "", "0.0.0.0:7946", "[::]:8080"},
		{"[::]:8080", "us.example:80", "", "10.0.0.5:7946", "us.example:80"},
	} {
		if got := advertisedHTTP(c.listen, c.explicit, c.advertise, c.gossip); got != c.want {
			t.Errorf("advertisedHTTP(%q, %q, %q, %q) = %q, want %q", c.listen, c.explicit, c.advertise, c.gossip, got, c.want)
		}
	}
}
