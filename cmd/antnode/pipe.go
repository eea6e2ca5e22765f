package main

import (
	"context"
	"errors"
	"flag"
	"io"
)

// mainPipe joins stdin and stdout to one stream to a peer's service, as
// netcat does: stdin's end becomes the stream's FIN, and the command ends
// when the service has ended its side too.
func mainPipe(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var o clientOptions
	fs := flag.NewFlagSet("antnode pipe", flag.ContinueOnError)
	o.register(fs)
	cmd := command{name: "antnode pipe", positional: true, synopsis: `usage: antnode pipe PEERID|TICKET SERVICE --bootstrap-nodes ADDR[,ADDR...] --key PATH [flags]
  join stdin and stdout to one stream to PEERID's service SERVICE (like netcat); exit 0 once both
  directions ended normally, else 1 with one line naming the reason
`}
	log, code, ok := o.parse(cmd, fs, args, stdout, stderr)
	if !ok {
		return code
	}
	c, s, err := o.open(ctx, log)
	if err != nil {
		failLine(stderr, "pipe", err)
		return exitFailure
	}
	defer c.Close()
	defer s.Close()
	stop := context.AfterFunc(ctx, s.Reset)
	defer stop()
	up := make(chan error, 1)
	go func() {
		_, err := io.Copy(s, stdin)
		if err == nil {
			err = s.CloseWrite()
		}
		up <- err
	}()
	_, err = io.Copy(stdout, s)
	if err == nil {
		// The service ended its side; stdin's side ends when stdin does
		// (or when the service stops reading).
		err = <-up
	}
	if err != nil {
		if ctx.Err() != nil {
			err = errors.Join(errors.New("interrupted"), err)
		}
		failLine(stderr, "pipe", err)
		return exitFailure
	}
	return exitOK
}
