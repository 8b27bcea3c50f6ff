package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/coalmine-dev/coalmine/sandbox"
)

// Flagger v1.36.1, the controller coalmine replaces, as the yardstick of the scenarios
// that compare the two: built from sandbox/tools/flagger on first use (~4 minutes cold,
// then cached with the sandbox), its CRDs from the module it was built from, run out of
// cluster as its own ServiceAccount with the RBAC of its Kuma provider, so the sandbox's
// authorization judges its requests as in a cluster.

// flaggerAPIVersion is the apiVersion of Flagger's Canary and MetricTemplate.
const flaggerAPIVersion = "flagger.app/v1beta1"

var flaggerSetup struct {
	once sync.Once
	bins *sandbox.FlaggerBinaries
	err  error
}

// flaggerInstalled builds Flagger (or takes it from the cache) and installs its CRDs and
// RBAC on the shared sandbox, once per test binary; every caller gets the same binaries.
func flaggerInstalled(t *testing.T) *sandbox.FlaggerBinaries {
	t.Helper()
	flaggerSetup.once.Do(func() {
		start := time.Now()
		// A cold build compiles Flagger and its dependencies on two shared cores.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		bins, err := sandbox.BuildFlagger(ctx, os.Stderr)
		if err != nil {
			flaggerSetup.err = fmt.Errorf("build Flagger: %w", err)
			return
		}
		if err := flaggerInstallCRDs(ctx, bins.CRDs); err != nil {
			flaggerSetup.err = err
			return
		}
		for _, o := range sandbox.FlaggerRBAC() {
			if err := tryApply(ctx, o); err != nil {
				flaggerSetup.err = fmt.Errorf("apply Flagger's RBAC %s: %w", o.GetName(), err)
				return
			}
		}
		flaggerSetup.bins = bins
		fmt.Fprintf(os.Stderr, "e2e: Flagger %s built or cached and installed in %s\n", bins.Version, time.Since(start).Round(10*time.Millisecond))
	})
	if flaggerSetup.err != nil {
		t.Fatal(flaggerSetup.err)
	}
	return flaggerSetup.bins
}

// flaggerInstallCRDs applies the CRDs of Flagger's crd.yaml and waits until they are served.
func flaggerInstallCRDs(ctx context.Context, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read Flagger's CRDs: %w", err)
	}
	objs, err := parseYAML(data)
	if err != nil {
		return fmt.Errorf("parse Flagger's CRDs: %w", err)
	}
	var names []string
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" {
			continue
		}
		if err := tryApply(ctx, o); err != nil {
			return fmt.Errorf("apply Flagger's CRD %s: %w", o.GetName(), err)
		}
		names = append(names, o.GetName())
	}
	for _, name := range names {
		if err := waitEstablished(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

// flaggerStart runs Flagger until t ends, watching namespace ns only (-namespace): another
// test's Flagger then never acts on this test's Canaries. Its log is kept with the
// sandbox's when a test fails. The TrafficRoutes named in routes (Flagger names them
// after the app alone, cluster-scoped, owned by nothing that is garbage collected) are
// deleted after it stopped.
func flaggerStart(t *testing.T, ns string, routes ...string) *sandbox.FlaggerProcess {
	t.Helper()
	bins := flaggerInstalled(t)
	user, groups := sandbox.FlaggerUser()
	kubeconfig, err := sb.KubeconfigFor(user, groups...)
	if err != nil {
		t.Fatalf("write Flagger's kubeconfig: %v", err)
	}
	logDir := filepath.Join(sb.Dir, "flagger-"+ns)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatalf("create Flagger's log directory: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, name := range routes {
			tr := &unstructured.Unstructured{}
			tr.SetGroupVersionKind(trafficRouteGVK)
			tr.SetName(name)
			if err := k8s.Delete(ctx, tr); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("delete Flagger's TrafficRoute %s: %v", name, err)
			}
		}
	})
	start := time.Now()
	f, err := sandbox.StartFlagger(testContext(t, 3*time.Minute), sandbox.FlaggerOptions{
		Binary: bins.Binary, Kubeconfig: kubeconfig, MetricsServer: sb.PrometheusURL, LogDir: logDir,
		// The scheduler picks up a new Canary at this pace (default 10 s); the analysis
		// runs at the Canary's own interval either way.
		Args: []string{"-namespace=" + ns, "-control-loop-interval=2s"},
	})
	if err != nil {
		t.Fatalf("start Flagger: %v", err)
	}
	t.Cleanup(func() {
		if err := f.Stop(); err != nil {
			t.Logf("stop Flagger: %v", err)
		}
	})
	t.Logf("Flagger %s (pid %d, log %s) watching namespace %s, started in %s", bins.Version, f.Pid(), f.LogPath(), ns,
		time.Since(start).Round(time.Millisecond))
	return f
}
