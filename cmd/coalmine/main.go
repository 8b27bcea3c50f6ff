// Command coalmine is the admission webhook and progression loop that turns Deployment
// updates in a Kuma mesh namespace into metrics-gated canary rollouts.
package main

import (
	"flag"
	"fmt"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/coalmine-dev/coalmine/cmd/coalmine/app"
)

func main() {
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
