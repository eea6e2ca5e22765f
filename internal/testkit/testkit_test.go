package testkit

import (
	"runtime"
	"testing"
	"time"
)

// TestWaitFor: a condition that comes true ends the wait; one that
// never does fails after the bound.
func TestWaitFor(t *testing.T) {
	n := 0
	WaitFor(t, time.Second, "three polls", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Fatalf("polled %d times", n)
	}
	ft := &fakeT{TB: t}
	start := time.Now()
	done := make(chan struct{})
	go func() { // fakeT.Fatalf ends this goroutine, as t.Fatalf would
		defer close(done)
		WaitFor(ft, 50*time.Millisecond, "never", func() bool { return false })
	}()
	<-done
	if !ft.failed || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("failed %v after %v", ft.failed, time.Since(start))
	}
}

// NeedTool finds a tool that is there.
func TestNeedTool(t *testing.T) {
	if p := NeedTool(t, "go"); p == "" {
		t.Fatal("no path for go")
	}
}

type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(string, ...any) {
	f.failed = true
	runtime.Goexit()
}

// TestRSS: this process has a resident set on Linux.
func TestRSS(t *testing.T) {
	if runtime.GOOS == "linux" && RSS() == 0 {
		t.Fatal("no VmRSS read on Linux")
	}
}
