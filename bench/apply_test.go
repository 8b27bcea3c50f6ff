//go:build linux

package bench

import (
	"context"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// Namespaces of BenchmarkApplyOverhead: one in the webhook's scope, one out of it.
const (
	managedNS = "bench-apply-managed"
	plainNS   = "bench-apply-unmanaged"
)

// BenchmarkApplyOverhead times a server-side apply of an image change through the
// apiserver for a managed Deployment (the mutating webhook is called and pauses it) and for
// an unmanaged one in a namespace outside the webhook's namespaceSelector (the apiserver
// calls no webhook), alternating the two in the same run. One op is
// COALMINE_BENCH_APPLIES (default 200) applies of each. The managed app's Canary is
// suspended once initialised, so the loop does not start a canary behind every apply:
// what is timed is admission alone. It reports; it never fails on timing.
func BenchmarkApplyOverhead(b *testing.B) {
	e := sharedEnv(b)
	ctx := context.Background()
	const name = "web"
	samples := 200
	if v, err := strconv.Atoi(os.Getenv("COALMINE_BENCH_APPLIES")); err == nil && v > 0 {
		samples = v
	}
	if err := e.createNamespace(ctx, managedNS, true); err != nil {
		b.Fatal(err)
	}
	if err := e.createNamespace(ctx, plainNS, false); err != nil {
		b.Fatal(err)
	}
	for _, ns := range []string{managedNS, plainNS} {
		if err := e.apply(ctx, appDeployment(ns, name, image(1))); err != nil {
			b.Fatal(err)
		}
	}
	canary := appCanary(managedNS, name)
	if err := e.apply(ctx, canary); err != nil {
		b.Fatal(err)
	}
	if _, err := e.waitCanaries(ctx, managedNS, []string{name}, 2*time.Minute, func(c *v1beta1.Canary) bool {
		return c.Status.Phase == v1beta1.PhaseInitialized || c.Status.Phase == v1beta1.PhaseSucceeded
	}); err != nil {
		b.Fatalf("wait for Initialized: %v", err)
	}
	canary.Spec.Suspend = true
	if err := e.apply(ctx, canary); err != nil {
		b.Fatal(err)
	}
	if _, err := e.waitCanaries(ctx, managedNS, []string{name}, time.Minute, func(c *v1beta1.Canary) bool {
		cond := meta.FindStatusCondition(c.Status.Conditions, "Ready")
		return cond != nil && cond.Reason == "Suspended"
	}); err != nil {
		b.Fatalf("wait for the Canary to be suspended: %v", err)
	}

	version := 2
	applyBoth := func(managed, plain *[]time.Duration, i int) {
		img := image(version)
		version++
		timed := func(ns string, into *[]time.Duration) {
			start := time.Now()
			if err := e.apply(ctx, appDeployment(ns, name, img)); err != nil {
				b.Fatal(err)
			}
			*into = append(*into, time.Since(start))
		}
		// Alternate who goes first, so neither always follows the other's admission work.
		if i%2 == 0 {
			timed(managedNS, managed)
			timed(plainNS, plain)
		} else {
			timed(plainNS, plain)
			timed(managedNS, managed)
		}
	}
	var warmM, warmP []time.Duration
	for i := range 10 {
		applyBoth(&warmM, &warmP, i)
	}

	var managed, plain []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range samples {
			applyBoth(&managed, &plain, j)
		}
	}
	b.StopTimer()

	// The managed applies must have gone through the webhook: it pauses a new revision.
	var d appsv1.Deployment
	if err := e.admin.Get(ctx, client.ObjectKey{Namespace: managedNS, Name: name}, &d); err != nil {
		b.Fatal(err)
	}
	if !d.Spec.Paused || d.Annotations[v1beta1.AnnotationRevision] != v1beta1.TemplateRevision(&d.Spec.Template) {
		b.Fatalf("managed Deployment not intercepted by the webhook: paused=%t, %s=%q, template revision %s",
			d.Spec.Paused, v1beta1.AnnotationRevision, d.Annotations[v1beta1.AnnotationRevision], v1beta1.TemplateRevision(&d.Spec.Template))
	}

	mp50, mp99 := percentiles(managed)
	pp50, pp99 := percentiles(plain)
	b.ReportMetric(ms(mp50), "managed-p50-ms")
	b.ReportMetric(ms(mp99), "managed-p99-ms")
	b.ReportMetric(ms(pp50), "unmanaged-p50-ms")
	b.ReportMetric(ms(pp99), "unmanaged-p99-ms")
	if pp50 > 0 && pp99 > 0 {
		b.ReportMetric(float64(mp50)/float64(pp50), "p50-ratio")
		b.ReportMetric(float64(mp99)/float64(pp99), "p99-ratio")
	}
	b.Logf("server-side apply of an image change, %d each: managed (webhook) p50 %.1f ms p99 %.1f ms; unmanaged (no webhook) p50 %.1f ms p99 %.1f ms; overhead p50 %+.1f ms",
		len(managed), ms(mp50), ms(mp99), ms(pp50), ms(pp99), ms(mp50-pp50))
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)*50/100], s[min(len(s)-1, len(s)*99/100)]
}
