package relay

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // TURN REST credentials are defined with HMAC-SHA1 (coturn's use-auth-secret)
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/antnode/antnode/identity"
)

// Credentials are ephemeral TURN credentials in the TURN REST style
// (draft-uberti-behave-turn-rest): the username is "EXPIRY:PEERID" (EXPIRY
// in Unix seconds), the password the base64 HMAC-SHA1 of the username
// under a secret the TURN server shares. coturn accepts them with
// use-auth-secret; the built-in relay accepts nothing else.
type Credentials struct {
	Username string
	Password string
	Expires  time.Time
}

// Errors of credential checks.
var (
	ErrBadUsername = errors.New("relay: username is not EXPIRY:PEERID")
	ErrExpired     = errors.New("relay: credentials expired")
)

// NewCredentials derives credentials for peer valid until now+ttl.
func NewCredentials(secret []byte, peer identity.PeerID, now time.Time, ttl time.Duration) Credentials {
	exp := now.Add(ttl).Truncate(time.Second)
	user := strconv.FormatInt(exp.Unix(), 10) + ":" + peer.String()
	return Credentials{Username: user, Password: password(secret, user), Expires: exp}
}

func password(secret []byte, user string) string {
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(user))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// ParseUsername checks a REST username at time now and returns its peer.
func ParseUsername(user string, now time.Time) (identity.PeerID, error) {
	exp, id, ok := strings.Cut(user, ":")
	if !ok {
		return identity.PeerID{}, ErrBadUsername
	}
	t, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return identity.PeerID{}, fmt.Errorf("%w: %w", ErrBadUsername, err)
	}
	peer, err := identity.ParsePeerID(id)
	if err != nil {
		return identity.PeerID{}, fmt.Errorf("%w: %w", ErrBadUsername, err)
	}
	if now.Unix() > t {
		return identity.PeerID{}, ErrExpired
	}
	return peer, nil
}

// Password returns the password of a REST username under secret.
func Password(secret []byte, user string) string { return password(secret, user) }
