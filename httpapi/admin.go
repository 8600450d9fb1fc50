package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/tallyhq/tally/replication/membership"
)

// Admin routes (the raw event log, the gossip keyring) need
// "Authorization: Bearer TOKEN" with the node's admin token. A node started
// without one refuses them all: the admin API is off.

// Error codes of the admin routes.
const (
	// CodeUnauthorized: no bearer token, or not the admin token (401).
	CodeUnauthorized = "unauthorized"
	// CodeAdminDisabled: the node has no admin token; admin routes are off (403).
	CodeAdminDisabled = "admin_disabled"
	// CodeNoKeyring: gossip is not encrypted, or the node does not gossip (409).
	CodeNoKeyring = "no_keyring"
	// CodeInvalidKey: a gossip key that is not base64 of 16, 24 or 32 bytes,
	// or an operation the keyring refuses (removing the primary key) (400).
	CodeInvalidKey = "invalid_key"
	// CodeInvalidAction: a keyring action other than install, use or remove (400).
	CodeInvalidAction = "invalid_action"
)

// Keyring manages the gossip encryption keys of the whole cluster (Serf's
// key manager): every operation is broadcast to every member and answered
// with how many members hold each key. *membership.Membership implements it.
type Keyring interface {
	ListKeys() (membership.KeyringStatus, error)
	InstallKey(key string) (membership.KeyringStatus, error)
	UseKey(key string) (membership.KeyringStatus, error)
	RemoveKey(key string) (membership.KeyringStatus, error)
}

// requireAdmin lets a request through only with the admin bearer token.
// Tokens are compared as SHA-256 digests in constant time, so neither their
// content nor their length leaks through timing.
func (s *Server) requireAdmin(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if len(s.adminHash) == 0 {
			return errf(http.StatusForbidden, CodeAdminDisabled, "the admin API is off: start the node with --admin-token (or TALLY_ADMIN_TOKEN)")
		}
		scheme, token, _ := strings.Cut(c.Request().Header.Get(echo.HeaderAuthorization), " ")
		got := sha256.Sum256([]byte(strings.TrimSpace(token)))
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(got[:], s.adminHash) != 1 {
			s.metrics.adminDenied.Inc()
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="tally admin"`)
			return errf(http.StatusUnauthorized, CodeUnauthorized, "admin route: send Authorization: Bearer <admin token>")
		}
		return next(c)
	}
}

// keyringRequest is the body of POST /v1/admin/gossip-keys.
type keyringRequest struct {
	// Action is install (add a key every member accepts), use (make an
	// installed key the one members encrypt with) or remove (drop a key that
	// is no longer primary anywhere).
	Action string `json:"action"`
	Key    string `json:"key"` // base64 of 16, 24 or 32 bytes
}

// keyringResponse answers the gossip-keys routes.
type keyringResponse struct {
	Members     int               `json:"members"`     // members gossip knows of
	Responses   int               `json:"responses"`   // members that answered
	Errors      int               `json:"errors"`      // members that failed the operation
	Keys        map[string]int    `json:"keys"`        // key → members holding it
	PrimaryKeys map[string]int    `json:"primaryKeys"` // key → members encrypting with it
	Messages    map[string]string `json:"messages"`    // member → its error or warning
}

func keyringJSON(st membership.KeyringStatus) keyringResponse {
	out := keyringResponse{Members: st.Members, Responses: st.Responses, Errors: st.Errors,
		Keys: st.Keys, PrimaryKeys: st.PrimaryKeys, Messages: st.Messages}
	for _, m := range []*map[string]int{&out.Keys, &out.PrimaryKeys} {
		if *m == nil {
			*m = map[string]int{}
		}
	}
	if out.Messages == nil {
		out.Messages = map[string]string{}
	}
	return out
}

// keyringError maps an error of a keyring operation to an API error.
func keyringError(err error) error {
	switch {
	case errors.Is(err, membership.ErrNoKeyring):
		return errf(http.StatusConflict, CodeNoKeyring, "%v", err)
	case errors.Is(err, membership.ErrInvalidKey):
		return errf(http.StatusBadRequest, CodeInvalidKey, "%v", err)
	}
	return errf(http.StatusBadGateway, CodeUnavailable, "keyring operation: %v", err)
}

// getGossipKeys answers GET /v1/admin/gossip-keys: the keys every member
// holds. It asks every member, so it takes up to a gossip query's timeout.
func (s *Server) getGossipKeys(c echo.Context) error {
	if s.opts.Keyring == nil {
		return errf(http.StatusConflict, CodeNoKeyring, "this node does not gossip (started without --gossip)")
	}
	st, err := s.opts.Keyring.ListKeys()
	if err != nil {
		return keyringError(err)
	}
	return c.JSON(http.StatusOK, keyringJSON(st))
}

// postGossipKeys answers POST /v1/admin/gossip-keys: one step of a key
// rotation, applied to every member (see the README's key rotation).
func (s *Server) postGossipKeys(c echo.Context) error {
	body, err := readJSONBody(c, MaxViewBody)
	if err != nil {
		return err
	}
	var req keyringRequest
	if err := decodeStrict(body, &req); err != nil {
		return err
	}
	if s.opts.Keyring == nil {
		return errf(http.StatusConflict, CodeNoKeyring, "this node does not gossip (started without --gossip)")
	}
	if err := membership.CheckKey(req.Key); err != nil {
		return keyringError(err)
	}
	var op func(string) (membership.KeyringStatus, error)
	switch req.Action {
	case "install":
		op = s.opts.Keyring.InstallKey
	case "use":
		op = s.opts.Keyring.UseKey
	case "remove":
		op = s.opts.Keyring.RemoveKey
	default:
		return errf(http.StatusBadRequest, CodeInvalidAction, "action %q: want install, use or remove", req.Action)
	}
	s.log.Info("gossip keyring change", "action", req.Action)
	st, err := op(req.Key)
	if err != nil {
		return keyringError(err)
	}
	status := http.StatusOK
	if st.Errors > 0 || st.Responses < st.Members {
		// Some members did not take the change (or did not answer): the
		// caller must look (messages) and retry before the next step.
		status = http.StatusMultiStatus
	}
	return c.JSON(status, keyringJSON(st))
}
