//go:build !demo

package main

import (
	"context"
	"fmt"
	"os"
)

// runDemo says where the demo is: the production binary leaves it out (see demo.go).
func runDemo(context.Context, []string) int {
	fmt.Fprintln(os.Stderr, "coalmine: this binary is built without the demo; run `make demo` "+
		"(or `go run -tags demo ./cmd/coalmine demo`) in a checkout of the repository")
	return 2
}
