package service

import (
	"context"
	"log/slog"
	"net"
	"time"
)

// TCPTarget is the Handler of a service that is a local TCP server (the
// daemon's --expose): for each stream it connects to target first,
// refuses the stream with CodeTargetUnreachable when that fails (within
// 5 s), and otherwise accepts it and joins the two (Join) until both
// directions have ended. log (nil: discarded) hears of unreachable
// targets and of streams that ended with an error.
func TCPTarget(target string, log *slog.Logger) Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return func(r *Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		var d net.Dialer
		tc, err := d.DialContext(ctx, "tcp", target)
		cancel()
		if err != nil {
			log.Warn("service target unreachable", "service", r.Local.Service, "err", err)
			r.Refuse(CodeTargetUnreachable)
			return
		}
		s, err := r.Accept()
		if err != nil {
			tc.Close()
			return
		}
		if _, _, err := Join(tc, s); err != nil {
			log.Debug("service stream ended with an error", "service", r.Local.Service, "peer", r.Remote.Peer.Short(), "err", err)
		}
	}
}
