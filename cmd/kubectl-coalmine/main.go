// Command kubectl-coalmine is the kubectl plugin of coalmine's operator commands:
// `kubectl coalmine status|promote|abort|retry|pause|resume`. It is the code of
// `coalmine status ...` (package cmd/coalmine/ctl) without the controller, so the plugin
// stays small. Install it anywhere on PATH; kubectl finds it by its name.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/coalmine-dev/coalmine/cmd/coalmine/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := ctl.Main(ctx, "kubectl coalmine", os.Args[1:])
	stop()
	os.Exit(code)
}
