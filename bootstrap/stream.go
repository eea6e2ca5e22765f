package bootstrap

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/event"
)

// Application error codes used to close control connections.
const (
	closeNormal       quic.ApplicationErrorCode = 0x0
	closeProtocol     quic.ApplicationErrorCode = 0x1
	closeReplaced     quic.ApplicationErrorCode = 0x2
	closeOverloaded   quic.ApplicationErrorCode = 0x3
	closeShutdown     quic.ApplicationErrorCode = 0x4
	closeSlowConsumer quic.ApplicationErrorCode = 0x5
	closeVersion      quic.ApplicationErrorCode = 0x6
	closeRegistryFull quic.ApplicationErrorCode = 0x7
	closeRateLimited  quic.ApplicationErrorCode = 0x8
)

// writeTimeout bounds a write to a control stream: a peer that does not read
// its control stream for this long is disconnected rather than allowed to
// stall the goroutines that write to it.
const writeTimeout = 3 * time.Second

// ctlStream is one side of a control stream: frames are written whole under
// a lock with a deadline; one goroutine reads.
type ctlStream struct {
	str streamRW
	r   *wire.Reader

	mu sync.Mutex
}

func newCtlStream(str streamRW) *ctlStream {
	return &ctlStream{str: str, r: wire.NewReader(str)}
}

// send writes m. A failure leaves the stream unusable; the caller closes the
// connection.
func (c *ctlStream) send(m wire.Message) error {
	b, err := wire.Marshal(m)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.str.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	if _, err := c.str.Write(b); err != nil {
		return fmt.Errorf("write %s: %w", m.Type(), err)
	}
	return nil
}

// sendError writes an Error message; failures are ignored because the
// caller closes the connection next anyway.
func (c *ctlStream) sendError(code wire.Code, text string) {
	_ = c.send(&wire.Error{Code: code, Text: text})
}

// ProtocolError is a violation of the control protocol by the other side.
type ProtocolError struct {
	Code wire.Code
	Msg  string
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("bootstrap: protocol error (%s): %s", e.Code, e.Msg)
}

// Reason is the code's reason (event.ReasonOf finds it).
func (e *ProtocolError) Reason() event.Reason { return codeReason(e.Code) }

// ErrProtocol matches every *ProtocolError with errors.Is.
var ErrProtocol = errors.New("bootstrap: protocol error")

// Is makes errors.Is(err, ErrProtocol) true.
func (e *ProtocolError) Is(target error) bool { return target == ErrProtocol }
