// Command sandbox builds the sandbox's binaries or runs a sandbox until interrupted.
//
//	go run ./sandbox/cmd/sandbox build   # build or reuse the binaries (make sandbox)
//	go run ./sandbox/cmd/sandbox up      # start one, print KUBECONFIG=..., wait for Ctrl-C
//	go run ./sandbox/cmd/sandbox flagger # build or reuse Flagger and its CRDs (make bench-peer's; not part of build)
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/coalmine-dev/coalmine/sandbox"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("sandbox", flag.ExitOnError)
	dir := fs.String("dir", "", "state and log directory for up (default: a new temporary directory, removed on exit)")
	controlPlaneOnly := fs.Bool("control-plane-only", false, "up: etcd and the apiserver only, with CRDs")
	crds := fs.String("crds", "", "up: a CRD directory to install too (default: manifests/crd of the repository)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: sandbox [flags] build|up|flagger\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	switch fs.Arg(0) {
	case "build":
		start := time.Now()
		bins, err := sandbox.Build(ctx, os.Stderr)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "sandbox: binaries ready in %s\n", time.Since(start).Round(time.Second))
		for _, p := range []string{bins.KubeAPIServer, bins.KubeControllerManager, bins.KubeScheduler, bins.Kubectl, bins.Etcd, bins.Kwok, bins.Prometheus, bins.KumaCP} {
			fmt.Println(p)
		}
		return nil
	case "flagger":
		fl, err := sandbox.BuildFlagger(ctx, os.Stderr)
		if err != nil {
			return err
		}
		fmt.Println(fl.Binary)
		fmt.Println(fl.CRDs)
		return nil
	case "up":
		opts := sandbox.Options{Dir: *dir, Log: os.Stderr, ControlPlaneOnly: *controlPlaneOnly}
		if *crds != "" {
			opts.CRDDirs = []string{*crds}
		} else if root, err := sandbox.RepoRoot(); err == nil {
			opts.CRDDirs = []string{filepath.Join(root, "manifests", "crd")}
		}
		sb, err := sandbox.Start(ctx, opts)
		if err != nil {
			return err
		}
		fmt.Printf("KUBECONFIG=%s\n", sb.KubeconfigPath)
		if sb.PrometheusURL != "" {
			fmt.Printf("PROMETHEUS_URL=%s\n", sb.PrometheusURL)
		}
		fmt.Printf("KUBECTL=%s\n", sb.Kubectl)
		fmt.Fprintf(os.Stderr, "sandbox: logs in %s; Ctrl-C to stop\n", sb.Dir)
		<-ctx.Done()
		return sb.Stop()
	default:
		fs.Usage()
		os.Exit(2)
		return nil
	}
}
