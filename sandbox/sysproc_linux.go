package sandbox

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// childAttrs puts a child in its own process group (so Stop can signal everything it
// forked) and has the kernel kill it when the process that started it dies, even by a
// panic or SIGKILL, so no sandbox outlives its test binary.
func childAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// deathSigWrapper returns a shell script that runs bin with a parent-death signal, for
// processes the sandbox does not fork itself (envtest starts etcd and the apiserver and
// only sets a process group). Without setpriv it returns "" and the binary is used as is.
func deathSigWrapper(bin string) string {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		return ""
	}
	return fmt.Sprintf("#!/bin/sh\nexec %s --pdeathsig KILL -- %s \"$@\"\n", shellQuote(setpriv), shellQuote(bin))
}

// lockFile takes an exclusive flock on path, calling waiting once if another process
// holds it, until ctx ends.
func lockFile(ctx context.Context, path string, waiting func()) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	told := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
		}
		if err != syscall.EWOULDBLOCK {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !told {
			waiting()
			told = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}
