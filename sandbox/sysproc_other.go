//go:build unix && !linux

package sandbox

import (
	"context"
	"syscall"
)

// childAttrs puts a child in its own process group so Stop can signal everything it
// forked. Outside Linux there is no parent-death signal: a killed test binary leaves its
// sandbox running.
func childAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

func deathSigWrapper(string) string { return "" }

// lockFile does not lock outside Linux; concurrent builds only duplicate work, since a
// binary is renamed into place only when complete.
func lockFile(context.Context, string, func()) (func(), error) { return func() {}, nil }
