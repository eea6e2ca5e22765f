package monitor

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"
)

// QLogTracer returns a quic.Config Tracer that writes one qlog file
// (JSON-SEQ, <odcid>_<client|server>.sqlog) per QUIC connection into dir,
// creating it with mode 0700. Addresses in the traces go through s, so a
// sanitised node writes sanitised traces. Each trace's writer goroutine
// is quic-go's and ends when its connection does. A file that cannot be
// created is reported to onError and the connection runs untraced.
func QLogTracer(dir string, s *Sanitizer, onError func(error)) (func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("monitor: qlog directory: %w", err)
	}
	tracer := func(_ context.Context, isClient bool, id quic.ConnectionID) qlogwriter.Trace {
		role := "server"
		if isClient {
			role = "client"
		}
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("%s_%s.sqlog", id, role)), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			if onError != nil {
				onError(fmt.Errorf("monitor: qlog: %w", err))
			}
			return nil
		}
		seq := qlogwriter.NewConnectionFileSeq(bufferedFile{bufio.NewWriterSize(f, 64<<10), f}, isClient, id)
		go seq.Run()
		return seq
	}
	if s == nil || s.Full() {
		return tracer, nil
	}
	return qlog.RedactIPs(tracer, func(ap netip.AddrPort, _ bool) (string, bool) {
		return s.AddrPort(ap), true
	}), nil
}

// bufferedFile flushes its buffer before closing the file.
type bufferedFile struct {
	*bufio.Writer
	f *os.File
}

func (b bufferedFile) Close() error {
	if err := b.Flush(); err != nil {
		b.f.Close()
		return err
	}
	return b.f.Close()
}
