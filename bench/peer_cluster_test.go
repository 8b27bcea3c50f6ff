//go:build linux

package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// peerLog prints a progress line on stderr as it happens: the testing package keeps only
// the first lines of a benchmark's log, and the timelines are what explains the figures.
func peerLog(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench-peer: "+format+"\n", args...)
}

// eventTimeline lists the Events of Canary name since from, with their offsets: both
// controllers' Events, whichever API they write them with (core v1 shows both).
func (e *env) eventTimeline(ctx context.Context, ns, name string, from time.Time) string {
	var list corev1.EventList
	if err := e.admin.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return " " + err.Error()
	}
	type line struct {
		at   time.Time
		text string
	}
	var lines []line
	for _, ev := range list.Items {
		if ev.InvolvedObject.Kind != "Canary" || ev.InvolvedObject.Name != name {
			continue
		}
		at := ev.LastTimestamp.Time
		if at.IsZero() {
			at = ev.EventTime.Time
		}
		if at.Before(from.Add(-time.Second)) {
			continue
		}
		lines = append(lines, line{at, fmt.Sprintf("\n  +%5.1fs %s: %s (x%d)", at.Sub(from).Seconds(), ev.Reason, ev.Message, max(ev.Count, 1))})
	}
	slices.SortFunc(lines, func(a, b line) int { return a.at.Compare(b.at) })
	var s strings.Builder
	for _, l := range lines {
		s.WriteString(l.text)
	}
	return s.String()
}

// waitPhases watches the Canaries (of apiVersion) of namespace until done(name, phase)
// held for every one in want, and returns when each first did.
func (e *env) waitPhases(ctx context.Context, apiVersion, namespace string, want []string, timeout time.Duration,
	done func(name, phase string) bool) (map[string]time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", apiVersion, err)
	}
	listGVK := gv.WithKind("CanaryList")
	wanted := map[string]bool{}
	for _, n := range want {
		wanted[n] = true
	}
	at := map[string]time.Time{}
	phases := map[string]string{}
	see := func(u *unstructured.Unstructured) {
		if !wanted[u.GetName()] {
			return
		}
		phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
		phases[u.GetName()] = phase
		if _, ok := at[u.GetName()]; !ok && done(u.GetName(), phase) {
			at[u.GetName()] = time.Now()
		}
	}
	fail := func(err error) error {
		count := map[string]int{}
		for _, n := range want {
			if _, ok := at[n]; !ok {
				count[phases[n]]++
			}
		}
		return fmt.Errorf("%d of %d Canaries in %s done, the others in phases %v: %w", len(at), len(want), namespace, count, err)
	}
	for {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(listGVK)
		if err := e.admin.List(ctx, list, client.InNamespace(namespace)); err != nil {
			select {
			case <-ctx.Done():
				return at, fail(fmt.Errorf("%w (last error: %v)", ctx.Err(), err))
			case <-time.After(time.Second):
				continue
			}
		}
		for i := range list.Items {
			see(&list.Items[i])
		}
		if len(at) == len(want) {
			return at, nil
		}
		wl := &unstructured.UnstructuredList{}
		wl.SetGroupVersionKind(listGVK)
		w, err := e.admin.Watch(ctx, wl, client.InNamespace(namespace),
			&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: list.GetResourceVersion()}})
		if err != nil {
			select {
			case <-ctx.Done():
				return at, fail(fmt.Errorf("%w (last error: %v)", ctx.Err(), err))
			case <-time.After(time.Second):
				continue
			}
		}
		for ev := range w.ResultChan() {
			if ev.Type == watch.Error {
				break // relist
			}
			if u, ok := ev.Object.(*unstructured.Unstructured); ok {
				see(u)
			}
			if len(at) == len(want) {
				w.Stop()
				return at, nil
			}
		}
		w.Stop()
		if ctx.Err() != nil {
			return at, fail(ctx.Err())
		}
	}
}

// deleteFlaggerRoutes deletes the TrafficRoutes Flagger made for the apps: cluster-scoped
// and without an owner, they would outlive the namespace and keep the simulator busy.
func (e *env) deleteFlaggerRoutes(ctx context.Context, b *testing.B, n int) {
	for i := range n {
		tr := &unstructured.Unstructured{}
		tr.SetAPIVersion("kuma.io/v1alpha1")
		tr.SetKind("TrafficRoute")
		tr.SetName(fmt.Sprintf("app-%04d", i))
		if err := e.admin.Delete(ctx, tr); err != nil && !apierrors.IsNotFound(err) {
			b.Logf("delete TrafficRoute %s: %v", tr.GetName(), err)
		}
	}
}
