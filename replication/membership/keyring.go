package membership

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/serf/serf"
)

// Sentinel errors of the keyring operations.
var (
	// ErrNoKeyring: gossip is not encrypted, so there is no keyring to change.
	ErrNoKeyring = errors.New("membership: gossip is not encrypted (no keyring)")
	// ErrInvalidKey: a key that is not base64 of 16, 24 or 32 bytes.
	ErrInvalidKey = errors.New("membership: invalid gossip key")
)

// maxKeyringFile bounds the keyring file read at start.
const maxKeyringFile = 64 << 10

// KeyringStatus is the cluster's answer to a keyring operation.
type KeyringStatus struct {
	Members   int // members gossip knows of
	Responses int // members that answered
	Errors    int // members that answered with a failure
	// Keys maps each installed key (base64) to the members holding it;
	// PrimaryKeys each primary key to the members encrypting with it. Only
	// ListKeys fills them.
	Keys, PrimaryKeys map[string]int
	Messages          map[string]string // member name → its error or warning
}

// CheckKey reports whether key is base64 of a valid gossip key.
func CheckKey(key string) error {
	_, err := decodeKey(key)
	return err
}

func decodeKey(key string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(key)
	if err != nil || (len(b) != 16 && len(b) != 24 && len(b) != 32) {
		return nil, fmt.Errorf("%w: want base64 of 16, 24 or 32 bytes", ErrInvalidKey)
	}
	return b, nil
}

// keyring returns the keys to start with, primary first: the keyring file's
// when it exists, else the configured ones (written to the file if set).
func keyring(cfg Config) ([][]byte, error) {
	var keys [][]byte
	if cfg.GossipKey != nil {
		keys = append(keys, cfg.GossipKey)
	}
	keys = append(keys, cfg.GossipKeys...)
	if cfg.KeyringFile == "" {
		return keys, nil
	}
	f, err := os.Open(cfg.KeyringFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if len(keys) == 0 {
			return nil, nil
		}
		if err := writeKeyringFile(cfg.KeyringFile, keys); err != nil {
			return nil, err
		}
		return keys, nil
	case err != nil:
		return nil, fmt.Errorf("membership: keyring file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyringFile+1))
	if err != nil {
		return nil, fmt.Errorf("membership: read keyring file %s: %w", cfg.KeyringFile, err)
	}
	if len(b) > maxKeyringFile {
		return nil, fmt.Errorf("membership: keyring file %s is over %d bytes", cfg.KeyringFile, maxKeyringFile)
	}
	var encoded []string
	if err := json.Unmarshal(b, &encoded); err != nil {
		return nil, fmt.Errorf("membership: keyring file %s: want a JSON array of base64 keys: %w", cfg.KeyringFile, err)
	}
	if len(encoded) == 0 {
		return nil, fmt.Errorf("membership: keyring file %s holds no key", cfg.KeyringFile)
	}
	configured := keys
	keys = nil
	for i, e := range encoded {
		k, err := decodeKey(e)
		if err != nil {
			return nil, fmt.Errorf("membership: keyring file %s, key %d: %w", cfg.KeyringFile, i+1, err)
		}
		keys = append(keys, k)
	}
	if len(configured) > 0 && !bytes.Equal(configured[0], keys[0]) && cfg.Logger != nil {
		cfg.Logger.Warn("the gossip keyring file wins over the configured gossip key (a rotation changed it)", "file", cfg.KeyringFile)
	}
	return keys, nil
}

// writeKeyringFile writes keys as Serf does: a JSON array of base64 keys,
// primary first, readable by the owner only.
func writeKeyringFile(path string, keys [][]byte) error {
	encoded := make([]string, len(keys))
	for i, k := range keys {
		encoded[i] = base64.StdEncoding.EncodeToString(k)
	}
	b, err := json.MarshalIndent(encoded, "", "  ")
	if err != nil {
		return fmt.Errorf("membership: encode keyring: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("membership: keyring file: %w", err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("membership: write keyring file: %w", err)
	}
	return nil
}

// ListKeys asks every member for its keys.
func (m *Membership) ListKeys() (KeyringStatus, error) {
	if !m.serf.EncryptionEnabled() {
		return KeyringStatus{}, ErrNoKeyring
	}
	r, err := m.serf.KeyManager().ListKeys()
	return keyStatus("list keys", r, err)
}

// InstallKey adds key (base64) to every member's keyring; members decrypt
// with it from then on, but do not encrypt with it yet.
func (m *Membership) InstallKey(key string) (KeyringStatus, error) {
	return m.keyOp("install key", key, m.serf.KeyManager().InstallKey)
}

// UseKey makes key (installed everywhere first) the key every member
// encrypts with.
func (m *Membership) UseKey(key string) (KeyringStatus, error) {
	return m.keyOp("use key", key, m.serf.KeyManager().UseKey)
}

// RemoveKey drops key from every member's keyring; a member refuses to drop
// its primary key.
func (m *Membership) RemoveKey(key string) (KeyringStatus, error) {
	return m.keyOp("remove key", key, m.serf.KeyManager().RemoveKey)
}

func (m *Membership) keyOp(what, key string, op func(string) (*serf.KeyResponse, error)) (KeyringStatus, error) {
	if !m.serf.EncryptionEnabled() {
		return KeyringStatus{}, ErrNoKeyring
	}
	if err := CheckKey(key); err != nil {
		return KeyringStatus{}, err
	}
	r, err := op(key)
	return keyStatus(what, r, err)
}

// keyStatus converts Serf's answer. Serf reports members that failed or did
// not answer as an error; that is a result here (Errors, Responses), and only
// a query that reached nobody is an error.
func keyStatus(what string, r *serf.KeyResponse, err error) (KeyringStatus, error) {
	if r == nil || (err != nil && r.NumResp == 0) {
		if err == nil {
			err = errors.New("no answer")
		}
		return KeyringStatus{}, fmt.Errorf("membership: %s: %w", what, err)
	}
	return KeyringStatus{
		Members: r.NumNodes, Responses: r.NumResp, Errors: r.NumErr,
		Keys: r.Keys, PrimaryKeys: r.PrimaryKeys, Messages: r.Messages,
	}, nil
}
