package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/sandbox/meshsim"
)

// fluxWaitTimeout is the `wait: true` Kustomization's timeout: longer than the opted-in
// canary takes to roll back here (threshold 2 at 3 s).
const fluxWaitTimeout = 40 * time.Second

// TestFluxWaitTrueTimesOutAfterARollback is what the README says about `wait: true`:
// alice opted in by annotation (coalmine creates her Canary, so Flux does not apply it),
// a Kustomization with `wait: true` and no health checks. A bad release is rolled back
// correctly, yet Flux waits on the paused Deployment until its timeout and then reports
// that Deployment InProgress, saying nothing about the canary.
func TestFluxWaitTrueTimesOutAfterARollback(t *testing.T) {
	buildFlux(t)
	env := sharedRollout(t)
	flux := startFlux(t)
	s := newScenario(t, env, scenarioOptions{})
	ctx, cancel := context.WithTimeout(t.Context(), fluxScenarioTimeout)
	t.Cleanup(cancel)
	s.ctx = ctx
	s.canary = recordCanary(t, s.ctx, watchClient(t, sb.Config), s.ns, appName)
	ks := recordKustomization(t, s.ctx, s.ns, kustomizationName, s.canary)
	repo, err := flux.NewGitRepo(s.ctx, s.ns)
	if err != nil {
		t.Fatal(err)
	}
	fs := &fluxScenario{scenario: s, flux: flux, repo: repo, ks: ks, optIn: true, waitAll: true}

	rev1 := fs.commit("alice v1, opted in", fs.manifests(imageV1, nil))
	fs.createFluxObjects()
	fs.waitReady(rev1)
	s.waitPhase(coalminev1beta1.PhaseInitialized, time.Minute)

	rev2 := fs.commit("alice v2", fs.manifests(imageV2, map[string]string{meshsim.EnvErrorRate: "0.2"}))
	applied := time.Now()
	s.waitPhase(coalminev1beta1.PhaseFailed, 2*time.Minute)
	rolledBack := time.Since(applied)
	var msg string
	fs.await(fluxWaitTimeout+time.Minute, "Kustomization HealthCheckFailed at "+rev2, func(ctx context.Context) (bool, error) {
		k, err := fs.kustomization(ctx)
		if err != nil {
			return false, err
		}
		ready := condition(k, "Ready")
		attempted, _, _ := unstructured.NestedString(k.Object, "status", "lastAttemptedRevision")
		if ready == nil || ready["reason"] != "HealthCheckFailed" || attempted != rev2 {
			return false, fmt.Errorf("Ready %v at %s", ready, attempted)
		}
		msg, _ = ready["message"].(string)
		return true, nil
	})
	failed := time.Since(applied)
	t.Logf("wait: true: rolled back %s after the apply, Kustomization HealthCheckFailed %s after it: %q",
		rolledBack.Round(100*time.Millisecond), failed.Round(100*time.Millisecond), msg)
	want := fmt.Sprintf("timeout waiting for: [Deployment/%s/%s status: 'InProgress']", s.ns, appName)
	if !strings.Contains(msg, want) {
		t.Errorf("Kustomization message %q, want %q", msg, want)
	}
	if failed < fluxWaitTimeout {
		t.Errorf("HealthCheckFailed %s after the apply, before the %s timeout: not the timeout this test is about", failed, fluxWaitTimeout)
	}
	fs.expectDeploymentInProgress()
	t.Logf("Kustomization Ready transitions: %s", ks.summary())
}
