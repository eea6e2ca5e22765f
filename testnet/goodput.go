package testnet

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sort"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Goodput under loss: a verified transfer of the same size over antnode's
// direct QUIC path and over a plain TCP connection (the kernel's default
// congestion control, CUBIC) between the same two public hosts, through
// the same impaired access links, interleaved, at each loss rate.

// GoodputConfig configures a goodput measurement.
type GoodputConfig struct {
	Bin      string        // the antnode binary. Required.
	LossPcts []float64     // loss per access link, percent. Nil: 0, 1, 2, 5.
	Delay    time.Duration // one-way delay per access link. Zero: 20 ms.
	Size     int64         // bytes per transfer. Zero: 16 MiB.
	Runs     int           // transfers of each kind per loss rate. Zero: 3.
	Timeout  time.Duration // per transfer. Zero: 10 min.
	// TCPCongestion is the TCP connections' congestion control, set on
	// each socket (a host's default may be another: BBR here). Empty:
	// "cubic", Linux's default. "reno" compares like with like: quic-go's
	// is NewReno.
	TCPCongestion string
	Progress      io.Writer // progress lines. Nil: discarded.
}

// GoodputRow is one loss rate's result. The ratio is the median of the
// interleaved pairs' QUIC / TCP ratios (pairs where both transfers were
// verified).
type GoodputRow struct {
	LossPct  float64   `json:"loss_pct"`
	DelayMS  float64   `json:"delay_ms"`
	Bytes    int64     `json:"bytes"`
	QUICMbps []float64 `json:"quic_mbps"`
	TCPMbps  []float64 `json:"tcp_mbps"`
	// TCPCongestion is the congestion control the TCP connections used.
	TCPCongestion string  `json:"tcp_congestion"`
	QUICMedian    float64 `json:"quic_mbps_median"`
	TCPMedian     float64 `json:"tcp_mbps_median"`
	Ratio         float64 `json:"quic_over_tcp"`
	QUICRTTMS     float64 `json:"quic_rtt_ms"`
	// DroppedPct is the share of IP frames the delay lines dropped by
	// loss; Overrun counts frames dropped because a line's queue was full.
	DroppedPct float64  `json:"dropped_pct"`
	Overrun    uint64   `json:"overrun"`
	Failures   []string `json:"failures,omitempty"`
}

// withDefaults fills in the zero fields of cfg.
func (cfg GoodputConfig) withDefaults() (GoodputConfig, error) {
	if cfg.Bin == "" {
		return cfg, errors.New("testnet: GoodputConfig.Bin is required")
	}
	if cfg.LossPcts == nil {
		cfg.LossPcts = []float64{0, 1, 2, 5}
	}
	if cfg.Delay <= 0 {
		cfg.Delay = 20 * time.Millisecond
	}
	if cfg.Size <= 0 {
		cfg.Size = 16 << 20
	}
	if cfg.Runs <= 0 {
		cfg.Runs = 3
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.TCPCongestion == "" {
		cfg.TCPCongestion = "cubic"
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	return cfg, nil
}

// Goodput measures goodput under loss: for each loss rate a testbed of two
// public sites (a direct path through both access links) with its
// bootstraps and daemons, then cfg.Runs QUIC and TCP transfers from the
// first host to the second, alternating which goes first. It needs root.
func Goodput(ctx context.Context, cfg GoodputConfig) ([]GoodputRow, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var rows []GoodputRow
	for _, loss := range cfg.LossPcts {
		row, err := goodputAt(ctx, cfg, loss)
		if err != nil {
			return rows, fmt.Errorf("testnet: goodput at %.1f%% loss: %w", loss, err)
		}
		fmt.Fprintf(cfg.Progress, "goodput at %.1f%% loss: QUIC %.2f Mbit/s, TCP %.2f Mbit/s, ratio %.3f (QUIC %v, TCP %v)\n",
			loss, row.QUICMedian, row.TCPMedian, row.Ratio, row.QUICMbps, row.TCPMbps)
		rows = append(rows, row)
	}
	return rows, nil
}

// goodputAt builds the testbed for one loss rate, measures, and tears it
// down.
func goodputAt(ctx context.Context, cfg GoodputConfig, loss float64) (GoodputRow, error) {
	row := GoodputRow{LossPct: loss, DelayMS: float64(cfg.Delay.Microseconds()) / 1000, Bytes: cfg.Size, TCPCongestion: cfg.TCPCongestion}
	spec := Spec{Prefix: fmt.Sprintf("antbgp%d-", os.Getpid()), Link: Impairment{Delay: cfg.Delay, Loss: loss},
		Sites: []SiteSpec{{Name: "public-1", Class: ClassPublic}, {Name: "public-2", Class: ClassPublic}}}
	tb, err := Build(ctx, spec)
	if err != nil {
		return row, err
	}
	defer tb.Close()
	dir, err := os.MkdirTemp("", "antnode-goodput-")
	if err != nil {
		return row, fmt.Errorf("testnet: work directory: %w", err)
	}
	defer os.RemoveAll(dir)
	a, b := tb.Hosts[0], tb.Hosts[1]
	// Each TCP connection starts afresh, as each QUIC connection does: no
	// ssthresh or RTT remembered from the last one.
	for _, h := range []Host{a, b} {
		if _, err := runIn(ctx, h.NS, "sysctl", "-q", "-w", "net.ipv4.tcp_no_metrics_save=1"); err != nil {
			return row, err
		}
	}
	env, err := Setup(ctx, tb, spec, cfg.Bin, dir, "", cfg.Progress)
	if err != nil {
		return row, err
	}
	defer env.Close()
	sink, err := startTCPSink(b.NS, netip.AddrPortFrom(netip.IPv4Unspecified(), tcpSinkPort), cfg.Size)
	if err != nil {
		return row, err
	}
	defer sink.Close()
	base := tb.lineCounts()
	row.measure(ctx, env, cfg, a, b)
	after := tb.lineCounts()
	if n := after.moved + after.dropped - base.moved - base.dropped; n > 0 {
		row.DroppedPct = math.Round(float64(after.dropped-base.dropped)/float64(n)*10000) / 100
	}
	row.Overrun = after.overrun - base.overrun
	return row, ctx.Err()
}

// measure runs cfg.Runs pairs of transfers from a to b, alternating which
// goes first, and fills in the row's numbers.
func (row *GoodputRow) measure(ctx context.Context, env *Env, cfg GoodputConfig, a, b Host) {
	dst := netip.AddrPortFrom(b.Addr, tcpSinkPort)
	var ratios, rtts []float64
	for i := 0; i < cfg.Runs && ctx.Err() == nil; i++ {
		var q, t float64
		quic := func() {
			r := env.Connect(ctx, a, b, cfg.Size, cfg.Timeout)
			switch {
			case r.BytesVerified != cfg.Size:
				row.Failures = append(row.Failures, fmt.Sprintf("QUIC run %d: %s %s", i+1, r.Reason, r.Error))
			case r.Path != "direct":
				row.Failures = append(row.Failures, fmt.Sprintf("QUIC run %d: path %s, not direct", i+1, r.Path))
			default:
				q = r.ThroughputMbps
				row.QUICMbps = append(row.QUICMbps, q)
				rtts = append(rtts, r.RTT)
			}
		}
		tcp := func() {
			mbps, err := sendTCP(ctx, a.NS, dst, cfg.TCPCongestion, cfg.Size, cfg.Timeout)
			if err != nil {
				row.Failures = append(row.Failures, fmt.Sprintf("TCP run %d: %v", i+1, err))
				return
			}
			t = mbps
			row.TCPMbps = append(row.TCPMbps, t)
		}
		if i%2 == 0 {
			quic()
			tcp()
		} else {
			tcp()
			quic()
		}
		fmt.Fprintf(cfg.Progress, "  %.1f%% loss, run %d: QUIC %.2f Mbit/s, TCP %.2f Mbit/s\n", row.LossPct, i+1, q, t)
		if q > 0 && t > 0 {
			ratios = append(ratios, q/t)
		}
	}
	row.QUICMedian = round2(median(row.QUICMbps))
	row.TCPMedian = round2(median(row.TCPMbps))
	row.Ratio = math.Round(median(ratios)*1000) / 1000
	row.QUICRTTMS = median(rtts)
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }

// median of xs (0 for none); xs is not changed.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// lineStats are the delay lines' frame counts, summed.
type lineStats struct{ moved, dropped, overrun uint64 }

func (tb *Testbed) lineCounts() lineStats {
	var s lineStats
	for _, d := range tb.lines {
		s.moved += d.moved.Load()
		s.dropped += d.dropped.Load()
		s.overrun += d.overrun.Load()
	}
	return s
}

// tcpSinkPort is the TCP sink's port on the receiving host.
const tcpSinkPort = 5001

// tcpSink receives TCP transfers: an 8-byte size, then that many bytes,
// answered with their SHA-256 and count (the verified transfer's
// protocol, on TCP). One connection at a time.
type tcpSink struct {
	ln   net.Listener
	done chan struct{}
}

// startTCPSink listens on addr in namespace ns and serves transfers of at
// most maxSize bytes until Close.
func startTCPSink(ns string, addr netip.AddrPort, maxSize int64) (*tcpSink, error) {
	var ln net.Listener
	err := InNS(ns, func() error {
		var err error
		ln, err = net.Listen("tcp4", addr.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("testnet: TCP sink in %s: %w", ns, err)
	}
	s := &tcpSink{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			receiveTCP(c, maxSize)
		}
	}()
	return s, nil
}

// Close stops the sink and waits for it.
func (s *tcpSink) Close() {
	s.ln.Close()
	<-s.done
}

// receiveTCP serves one transfer on c and closes it. A transfer that
// stalls for a minute is abandoned.
func receiveTCP(c net.Conn, maxSize int64) {
	defer c.Close()
	var hdr [8]byte
	c.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	size := int64(binary.BigEndian.Uint64(hdr[:]))
	if size < 0 || size > maxSize {
		return
	}
	h := sha256.New()
	buf := make([]byte, 64<<10)
	for left := size; left > 0; {
		c.SetReadDeadline(time.Now().Add(time.Minute))
		n, err := c.Read(buf[:min(int64(len(buf)), left)])
		h.Write(buf[:n])
		left -= int64(n)
		if err != nil && left > 0 {
			return
		}
	}
	var reply [40]byte
	h.Sum(reply[:0])
	binary.BigEndian.PutUint64(reply[32:], uint64(size))
	c.Write(reply[:])
}

// sendTCP connects from namespace ns to dst, sends size pseudo-random
// bytes and waits for the sink's digest; it returns the goodput in Mbit/s
// from the completed handshake to the verified reply (as the QUIC
// transfer's, from its stream's opening on the established connection).
func sendTCP(ctx context.Context, ns string, dst netip.AddrPort, cc string, size int64, timeout time.Duration) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var c net.Conn
	err := InNS(ns, func() error {
		var err error
		c, err = (&net.Dialer{Control: setCongestion(cc)}).DialContext(ctx, "tcp4", dst.String())
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("testnet: TCP dial %s: %w", dst, err)
	}
	defer c.Close()
	return transferTCP(ctx, c, size)
}

// setCongestion returns a dialer's Control that sets the socket's
// congestion control to cc (nothing when cc is empty).
func setCongestion(cc string) func(network, address string, rc syscall.RawConn) error {
	if cc == "" {
		return nil
	}
	return func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, cc)
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("testnet: TCP congestion control %q: %w", cc, serr)
		}
		return nil
	}
}

// transferTCP sends size pseudo-random bytes on c, a connection to a TCP
// sink, and waits for its digest; it returns the goodput in Mbit/s.
func transferTCP(ctx context.Context, c net.Conn, size int64) (float64, error) {
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	start := time.Now()
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], uint64(size))
	if _, err := c.Write(hdr[:]); err != nil {
		return 0, fmt.Errorf("testnet: TCP send: %w", err)
	}
	var seed [32]byte
	binary.BigEndian.PutUint64(seed[:], mrand.Uint64())
	src, h := mrand.NewChaCha8(seed), sha256.New()
	buf := make([]byte, 64<<10)
	for left := size; left > 0; {
		n := int(min(int64(len(buf)), left))
		src.Read(buf[:n])
		h.Write(buf[:n])
		if _, err := c.Write(buf[:n]); err != nil {
			return 0, fmt.Errorf("testnet: TCP send: %w", err)
		}
		left -= int64(n)
	}
	var reply [40]byte
	if _, err := io.ReadFull(c, reply[:]); err != nil {
		return 0, fmt.Errorf("testnet: TCP reply: %w", err)
	}
	d := time.Since(start)
	if [32]byte(reply[:32]) != [32]byte(h.Sum(nil)) || int64(binary.BigEndian.Uint64(reply[32:])) != size {
		return 0, errors.New("testnet: TCP transfer not verified")
	}
	return float64(size) * 8 / d.Seconds() / 1e6, nil
}
