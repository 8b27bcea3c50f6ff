//go:build demo

package main

import (
	"context"

	"github.com/coalmine-dev/coalmine/cmd/coalmine/demo"
)

// runDemo is `coalmine demo`. It is only in binaries built with -tags demo (make demo):
// the demo links the sandbox (envtest, kwok, the build tooling), whose code would
// otherwise sit in every production binary's memory.
func runDemo(ctx context.Context, args []string) int {
	return demo.Main(ctx, args)
}
