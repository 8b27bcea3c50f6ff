// Command coalmine is the admission webhook and progression loop that turns Deployment
// updates in a Kuma mesh namespace into metrics-gated canary rollouts.
//
// `coalmine status|promote|abort|retry|pause|resume` are the operator commands (package
// ctl), the same code as the kubectl plugin kubectl-coalmine; a copy of this binary named
// kubectl-coalmine is that plugin too.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/coalmine-dev/coalmine/cmd/coalmine/app"
	"github.com/coalmine-dev/coalmine/cmd/coalmine/ctl"
)

func main() {
	if base := strings.TrimSuffix(filepath.Base(os.Args[0]), ".exe"); base == "kubectl-coalmine" {
		os.Exit(runCtl("kubectl coalmine", os.Args[1:]))
	}
	if len(os.Args) > 1 && ctl.IsCommand(os.Args[1]) {
		os.Exit(runCtl("coalmine", os.Args[1:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "demo" {
		// The demo owns the screen; coalmine's own logs go to a file it names.
		os.Exit(runDemo(ctrl.SetupSignalHandler(), os.Args[2:]))
	}
	var opts app.Options
	fs := flag.NewFlagSet("coalmine", flag.ExitOnError)
	opts.BindFlags(fs)
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	_ = fs.Parse(os.Args[1:])
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	if err := opts.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "coalmine: invalid options:\n%v\n", err)
		os.Exit(2)
	}
	if err := app.Run(ctrl.SetupSignalHandler(), opts); err != nil {
		fmt.Fprintf(os.Stderr, "coalmine: %v\n", err)
		os.Exit(1)
	}
}

// runCtl runs an operator command until it ends or the user interrupts it.
func runCtl(prog string, args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return ctl.Main(ctx, prog, args)
}
