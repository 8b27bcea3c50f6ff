package ctl

import (
	"os"
	"strings"

	"golang.org/x/term"
)

// isTerminal reports whether f is a terminal that understands cursor movement.
func isTerminal(f *os.File) bool {
	return term.IsTerminal(int(f.Fd())) && !strings.EqualFold(os.Getenv("TERM"), "dumb")
}
