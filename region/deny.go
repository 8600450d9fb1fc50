package region

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// DenyList names users and client addresses whose views are never counted.
// It is read-only once built, so safe for concurrent use.
type DenyList struct {
	users    map[string]bool
	prefixes []netip.Prefix
}

// ParseDenyList reads a deny list: one entry per line, "user:ID" for a user
// ID, "ip:ADDR" or "ip:ADDR/BITS" for an address or network; blank lines and
// lines starting with # are skipped.
func ParseDenyList(r io.Reader) (*DenyList, error) {
	d := &DenyList{users: map[string]bool{}}
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		kind, val, _ := strings.Cut(text, ":")
		switch kind {
		case "user":
			if !validID(val) {
				return nil, fmt.Errorf("deny list line %d: user %q is not a valid user ID", line, val)
			}
			d.users[val] = true
		case "ip":
			p, err := parsePrefix(val)
			if err != nil {
				return nil, fmt.Errorf("deny list line %d: %w", line, err)
			}
			d.prefixes = append(d.prefixes, p)
		default:
			return nil, fmt.Errorf("deny list line %d: %q: want user:ID or ip:ADDR[/BITS]", line, text)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read deny list: %w", err)
	}
	return d, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("network %q: %w", s, err)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("address %q: %w", s, err)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// Len is the number of entries.
func (d *DenyList) Len() int {
	if d == nil {
		return 0
	}
	return len(d.users) + len(d.prefixes)
}

// denies reports whether a view by user from ip (possibly empty) is denied.
func (d *DenyList) denies(user, ip string) bool {
	if d == nil {
		return false
	}
	if d.users[user] {
		return true
	}
	if ip == "" || len(d.prefixes) == 0 {
		return false
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range d.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
