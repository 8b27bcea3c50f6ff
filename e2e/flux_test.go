package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime/schema"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/sandbox"
	"github.com/coalmine-dev/coalmine/sandbox/meshsim"
)

// Flux for real (issue 12, items 2 and 3): Flux's source-controller and
// kustomize-controller, built from their own tools modules and run out of cluster against
// the sandbox under their own ServiceAccounts, pull the seed's app (Deployment alice and
// the seed's Canary; the seed deploys no Service, coalmine creates them) from a Git
// repository on a local Git server. Releases are commits; everything in the app's
// namespace that is in Git is applied by the real kustomize-controller. The Kustomization
// has the health checks the README recommends.

var (
	gitRepositoryGVK = schema.GroupVersionKind{Group: "source.toolkit.fluxcd.io", Version: "v1", Kind: "GitRepository"}
	kustomizationGVK = schema.GroupVersionKind{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Kind: "Kustomization"}
)

const (
	// fluxScenarioTimeout bounds the story once Flux runs: four commits, two analyses.
	fluxScenarioTimeout = 5 * time.Minute
	// fluxBuildTimeout bounds building Flux's parts when the cache lacks them (cold: ~20
	// min of CPU on two cores).
	fluxBuildTimeout = 35 * time.Minute
	// fluxHealthTimeout is the Kustomization's spec.timeout: how long a health check waits.
	fluxHealthTimeout = 2 * time.Minute
	// fluxRetryInterval is the Kustomization's spec.retryInterval: when a failed
	// reconciliation (a failed health check) is tried again.
	fluxRetryInterval = 10 * time.Second
	kustomizationName = "alice"
)

// TestFluxReleasesThroughGit: commit v1 (initialized), a good v2 (promoted; the
// Kustomization Ready only once the Canary is), a bad v3 (rolled back; Ready=False,
// HealthCheckFailed on the Canary, whose own Ready condition names the failed metric),
// and the revert of v3 (back on v2 with nothing rolled, Ready again). At every settled
// point a forced reconciliation applies nothing: Flux sees no drift, and it never reports
// an apply failure.
func TestFluxReleasesThroughGit(t *testing.T) {
	buildFlux(t)
	env := sharedRollout(t)
	flux := startFlux(t)
	start := time.Now()
	s := newScenario(t, env, scenarioOptions{})
	ctx, cancel := context.WithTimeout(t.Context(), fluxScenarioTimeout)
	t.Cleanup(cancel)
	s.ctx = ctx
	s.canary = recordCanary(t, s.ctx, watchClient(t, sb.Config), s.ns, appName)
	s.route = s.recordRoute(s.routes, s.routesLabel)
	ks := recordKustomization(t, s.ctx, s.ns, kustomizationName, s.canary)
	rss := sampleRSS(s.ctx, flux)

	repo, err := flux.NewGitRepo(s.ctx, s.ns)
	if err != nil {
		t.Fatal(err)
	}
	fs := &fluxScenario{scenario: s, flux: flux, repo: repo, ks: ks, healthChecks: fluxHealthChecks()}

	// v1: the Deployment and the seed's Canary. Flux creates both; coalmine initializes.
	rev1 := fs.commit("alice v1", fs.manifests(imageV1, nil))
	fs.createFluxObjects()
	fs.waitReady(rev1)
	s.waitPhase(coalminev1beta1.PhaseInitialized, time.Minute)
	fs.expectInventory()
	fs.expectNoDrift(rev1, true)

	// v2, a good release: applied by Flux, paused by the webhook, analysed, promoted. The
	// health checks hold the Kustomization until the Canary is Current again.
	rev2 := fs.commit("alice v2", fs.manifests(imageV2, nil))
	c := s.waitPhase(coalminev1beta1.PhaseSucceeded, 3*time.Minute)
	fs.waitReady(rev2)
	fs.expectHealthWaitedFor(rev2, coalminev1beta1.PhaseSucceeded)
	s.expectPromoted(c, s.target())
	if img := s.target().Spec.Template.Spec.Containers[0].Image; img != imageV2 {
		t.Errorf("alice runs %s after the v2 commit, want %s", img, imageV2)
	}
	fs.logPausedOwners("after the promotion")
	fs.expectNoDrift(rev2, true)
	promotedRS := fs.replicaSets()

	// v3, a bad release (20% errors): rolled back; the health check fails on the Canary.
	rev3 := fs.commit("alice v3", fs.manifests(imageV3, map[string]string{meshsim.EnvErrorRate: "0.2"}))
	failed := s.waitPhase(coalminev1beta1.PhaseFailed, 2*time.Minute)
	if !strings.Contains(failed.Status.Message, coalminev1beta1.MetricRequestSuccessRate) {
		t.Errorf("Canary message %q, want it to name %s", failed.Status.Message, coalminev1beta1.MetricRequestSuccessRate)
	}
	fs.expectRolledBack(failed, imageV3, imageV2)
	fs.waitHealthFailed(rev3)
	fs.expectNeverReadyAt(rev3)
	fs.expectKstatusFailed(coalminev1beta1.MetricRequestSuccessRate)
	fs.expectDeploymentInProgress()
	fs.logPausedOwners("after the rollback")
	fs.expectNoDrift(rev3, false)

	// The revert of v3: the template is v2 again, the stable one; nothing rolls.
	rev4 := fs.revert()
	c = s.waitPhase(coalminev1beta1.PhaseSucceeded, 2*time.Minute)
	fs.waitReady(rev4)
	if c.Status.StableRevision != c.Status.LastPromotedRevision {
		t.Errorf("after the revert: stableRevision %s, lastPromotedRevision %s; want v2's for both", c.Status.StableRevision, c.Status.LastPromotedRevision)
	}
	if d := s.target(); d.Spec.Paused || d.Spec.Template.Spec.Containers[0].Image != imageV2 {
		t.Errorf("after the revert: paused=%v image %s, want unpaused on %s", d.Spec.Paused, d.Spec.Template.Spec.Containers[0].Image, imageV2)
	}
	fs.logPausedOwners("after the revert")
	s.expectPodsOn(imageV2, true)
	if got := fs.replicaSets(); !slices.Equal(got, promotedRS) {
		t.Errorf("ReplicaSets of alice after the revert %v, want those after v2's promotion %v (nothing rolled)", got, promotedRS)
	}
	s.expectNoCanaryDeployment()
	s.expectRouteAllPrimary()
	fs.expectInventory()
	fs.expectNoDrift(rev4, true)
	fs.expectAppliesOnlyOnNewRevisions()
	fs.expectNoFailureButHealth(rev3, rev4)

	t.Logf("Kustomization Ready transitions: %s", ks.summary())
	reportFlux(t, flux, rss(), time.Since(start))
}

// fluxHealthChecks are the Kustomization's healthChecks: the Canary and its Deployment,
// as the README recommends. COALMINE_E2E_FLUX_HEALTH=canary checks the Canary alone, to
// show why the Deployment belongs there (the first poll may read the previous revision's
// Current Canary).
func fluxHealthChecks() []string {
	if os.Getenv("COALMINE_E2E_FLUX_HEALTH") == "canary" {
		return []string{"Canary"}
	}
	return []string{"Canary", "Deployment"}
}

// buildFlux builds Flux's parts when the cache lacks them, before anything else of t
// runs. Without their modules (no network, empty module cache) it skips t.
func buildFlux(t *testing.T) {
	t.Helper()
	if err := sandbox.BuildFlux(testContext(t, fluxBuildTimeout), os.Stderr, sb.Binaries); err != nil {
		if errors.Is(err, sandbox.ErrModulesUnavailable) {
			t.Skipf("Flux's source-controller, kustomize-controller or git server cannot be built here: %v", err)
		}
		t.Fatalf("build Flux: %v", err)
	}
}

// startFlux starts Flux's parts on the shared sandbox for t. Call it after
// sharedRollout: the git server's port is the kernel's pick, and while the shared coalmine
// is down between two tests the kernel may hand out the port its web view comes back on
// (seen once: "bind: address already in use").
func startFlux(t *testing.T) *sandbox.Flux {
	t.Helper()
	f, err := sb.StartFlux(testContext(t, 3*time.Minute))
	if err != nil {
		t.Fatalf("start Flux: %v", err)
	}
	t.Cleanup(func() {
		if err := f.Stop(); err != nil {
			t.Errorf("stop Flux: %v", err)
		}
	})
	t.Logf("Flux started: %s", f.StartUpSummary())
	return f
}

// rssRange is the lowest and highest RSS a part had while the scenario ran.
type rssRange struct{ min, max int64 }

// sampleRSS samples each Flux part's RSS every 2 s until ctx ends; the returned function
// stops the sampling and returns the ranges.
func sampleRSS(ctx context.Context, f *sandbox.Flux) func() map[string]rssRange {
	ctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	ranges := map[string]rssRange{}
	sample := func() {
		mu.Lock()
		defer mu.Unlock()
		for n, v := range f.RSS() {
			r, ok := ranges[n]
			if !ok || v < r.min {
				r.min = v
			}
			if v > r.max {
				r.max = v
			}
			ranges[n] = r
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(2 * time.Second)
		defer tick.Stop()
		for {
			sample()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() map[string]rssRange {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return ranges
	}
}

// reportFlux logs the figures NOTES.md quotes: start-up and RSS of each part, and the
// scenario's wall time. COALMINE_FLUX_REPORT names a file to write them to as well.
func reportFlux(t *testing.T, f *sandbox.Flux, rss map[string]rssRange, wall time.Duration) {
	names := make([]string, 0, len(rss))
	for n := range rss {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, " %s: start-up %s, RSS %d-%d MiB;", n, f.StartUp[n].Round(10*time.Millisecond), rss[n].min>>20, rss[n].max>>20)
	}
	line := fmt.Sprintf("flux figures:%s scenario wall time %s", b.String(), wall.Round(time.Second))
	t.Log(line)
	if path := os.Getenv("COALMINE_FLUX_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(line+"\n"), 0o644); err != nil {
			t.Errorf("write %s: %v", path, err)
		}
	}
}
