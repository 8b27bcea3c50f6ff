// Package e2e runs coalmine's scenarios on one shared sandbox: a real apiserver,
// controller-manager, scheduler, kwok node and Prometheus started by TestMain.
// `go test -short ./e2e/...` skips them.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/coalmine-dev/coalmine/sandbox"
)

// sandboxStartTimeout bounds building (cold: about ten minutes on two cores) and starting
// the sandbox.
const sandboxStartTimeout = 30 * time.Minute

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("e2e: skipped in -short mode (the scenarios need the sandbox)")
		os.Exit(0)
	}
	os.Exit(runWithSandbox(m))
}

// runWithSandbox starts the shared sandbox, runs the tests and always stops it. The
// sandbox's directory (state and the log of every process) is removed when everything
// passed and kept otherwise. If the test binary dies instead, its children die with it
// (parent-death signal), leaving only the directory.
func runWithSandbox(m *testing.M) int {
	if !sandbox.Cached() {
		if f := flag.Lookup("test.timeout"); f != nil {
			if d, err := time.ParseDuration(f.Value.String()); err == nil && d > 0 && d < 20*time.Minute {
				fmt.Fprintf(os.Stderr, "e2e: the sandbox binaries are not built yet and -timeout is %s; a cold build takes ~10 min: run `make sandbox` first or pass -timeout 30m\n", d)
			}
		}
	}
	root, err := sandbox.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "coalmine-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	// controller-runtime's logs (envtest, and the controllers scenarios run in-process)
	// go to a file next to the sandbox's, not into the test output.
	logFile, err := os.Create(filepath.Join(dir, "e2e-controllers.log"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer logFile.Close()
	ctrllog.SetLogger(funcr.New(func(prefix, args string) {
		fmt.Fprintln(logFile, time.Now().Format(time.RFC3339Nano), prefix, args)
	}, funcr.Options{Verbosity: 1}))

	ctx, cancel := context.WithTimeout(context.Background(), sandboxStartTimeout)
	sb, err = sandbox.Start(ctx, sandbox.Options{
		Dir:     dir,
		Log:     os.Stderr,
		CRDDirs: []string{filepath.Join(root, "manifests", "crd")},
	})
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: start sandbox: %v\ne2e: logs in %s\n", err, dir)
		return 1
	}
	if err := connect(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		_ = sb.Stop()
		return 1
	}

	code := m.Run()

	if err := sb.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: stop sandbox:", err)
		if code == 0 {
			code = 1
		}
	}
	if code == 0 {
		_ = os.RemoveAll(dir)
	} else {
		fmt.Fprintf(os.Stderr, "e2e: sandbox state and logs kept in %s\n", dir)
	}
	return code
}
