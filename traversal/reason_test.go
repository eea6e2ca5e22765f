package traversal

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/failsafe-go/failsafe-go/timeout"
	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/holepunch"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/relay"
	"github.com/antnode/antnode/service"
)

// TestReason: the one mapping from errors to reasons, for every wire code
// a bootstrap can answer (as a request's refusal and as a protocol error,
// the same reason both ways and as the bootstrap records it), and for the
// other layers' errors, wrapped as callers wrap them.
func TestReason(t *testing.T) {
	byCode := map[wire.Code]event.Reason{
		wire.CodeOK:           event.ReasonNone, // never sent as a refusal
		wire.CodeUnknownPeer:  event.ReasonUnknownPeer,
		wire.CodeRateLimited:  event.ReasonRateLimited,
		wire.CodeExpired:      event.ReasonExpired,
		wire.CodeRefused:      event.ReasonRefused,
		wire.CodeOverloaded:   event.ReasonOverloaded,
		wire.CodeSelf:         event.ReasonSelf,
		wire.CodeGone:         event.ReasonConnectionLost, // was "expired" here and "connection_lost" in the bootstrap
		wire.CodeBadRequest:   event.ReasonProtocolError,
		wire.CodeVersion:      event.ReasonProtocolError,
		wire.CodeTooMany:      event.ReasonOverloaded,
		wire.CodeRegistryFull: event.ReasonRegistryFull, // a registration refused: the registry is full
	}
	for c := wire.Code(0); !strings.HasPrefix(c.String(), "code("); c++ {
		want, ok := byCode[c]
		if !ok {
			t.Fatalf("wire code %s has no expected reason in this table", c)
		}
		for _, err := range []error{&bootstrap.RequestError{Code: c}, &bootstrap.ProtocolError{Code: c, Msg: "x"}} {
			wrapped := fmt.Errorf("traversal: introduce: %w", err)
			if got := Reason(wrapped); got != want {
				t.Errorf("%T %s: %s, want %s", err, c, got, want)
			}
		}
	}
	tests := []struct {
		name string
		err  error
		want event.Reason
	}{
		{"nil", nil, event.ReasonNone},
		{"connect error keeps its reason", &ConnectError{Reason: event.ReasonBothSymmetric, Err: context.Canceled}, event.ReasonBothSymmetric},
		{"key mismatch", fmt.Errorf("dial: %w", &identity.KeyMismatchError{}), event.ReasonKeyMismatch},
		{"relay quota", fmt.Errorf("relay: %w", relay.ErrQuota), event.ReasonRelayQuota},
		{"relay refused", relay.ErrRefused, event.ReasonRelayUnavailable},
		{"no relay", ErrNoRelay, event.ReasonRelayUnavailable},
		{"no relay, the bootstrap refused", fmt.Errorf("%w: bootstrap 0: %w", ErrNoRelay, &bootstrap.RequestError{Code: wire.CodeRefused}), event.ReasonRelayUnavailable},
		{"bootstrap unavailable", fmt.Errorf("%w: lost", bootstrap.ErrUnavailable), event.ReasonBootstrapUnreachable},
		{"peer gave up", bootstrap.ErrPeerCanceled, event.ReasonCanceled},
		{"no path", holepunch.ErrNoPath, event.ReasonPunchTimeout},
		{"birthday failed", holepunch.ErrBirthdayFailed, event.ReasonPunchTimeout},
		{"no candidates", holepunch.ErrNoCandidates, event.ReasonNoCandidates},
		{"transfer mismatch", ErrTransferMismatch, event.ReasonTransferMismatch},
		{"service not allowed", fmt.Errorf("dial: %w", &service.StreamError{Service: "web", Code: service.CodeNotAllowed}), event.ReasonNotAllowed},
		{"service unknown", &service.StreamError{Code: service.CodeUnknownService}, event.ReasonUnknownService},
		{"service target", &service.StreamError{Code: service.CodeTargetUnreachable}, event.ReasonTargetUnreachable},
		{"service limit", &service.StreamError{Code: service.CodeStreamLimit}, event.ReasonStreamLimit},
		{"canceled", context.Canceled, event.ReasonCanceled},
		{"handshake timeout", &quic.HandshakeTimeoutError{}, event.ReasonHandshakeFailed},
		{"deadline", context.DeadlineExceeded, event.ReasonTimeout},
		{"phase timeout", timeout.ErrExceeded, event.ReasonTimeout},
		{"idle", &quic.IdleTimeoutError{}, event.ReasonTimeout},
		{"anything else", errors.New("boom"), event.ReasonInternal},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Reason(tc.err); got != tc.want {
				t.Fatalf("Reason(%v) = %s, want %s", tc.err, got, tc.want)
			}
		})
	}
}
