package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
)

// condition returns the status condition typ of u, or nil.
func condition(u *unstructured.Unstructured, typ string) map[string]any {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == typ {
			return m
		}
	}
	return nil
}

// kustomizationRecorder watches a Kustomization and notes every change of its Ready
// condition, with the Canary's phase as last seen at that moment.
type kustomizationRecorder struct {
	mu     sync.Mutex
	trs    []readyTransition
	last   string
	canary *canaryRecorder
}

type readyTransition struct {
	at      time.Time
	ready   bool
	reason  string
	message string
	// attempted is status.lastAttemptedRevision: the revision the condition is about.
	attempted   string
	canaryPhase coalminev1beta1.CanaryPhase
}

func recordKustomization(t *testing.T, ctx context.Context, ns, name string, canary *canaryRecorder) *kustomizationRecorder {
	r := &kustomizationRecorder{canary: canary}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(kustomizationGVK.GroupVersion().WithKind(kustomizationGVK.Kind + "List"))
	watchNamed(t, ctx, watchClient(t, sb.Config), list, ns, name, func(obj k8sruntime.Object, typ watch.EventType) {
		if typ != watch.Deleted {
			r.observe(obj.(*unstructured.Unstructured))
		}
	})
	return r
}

func (r *kustomizationRecorder) observe(u *unstructured.Unstructured) {
	ready := condition(u, "Ready")
	if ready == nil {
		return
	}
	rev, _, _ := unstructured.NestedString(u.Object, "status", "lastAttemptedRevision")
	status, _ := ready["status"].(string)
	reason, _ := ready["reason"].(string)
	message, _ := ready["message"].(string)
	key := status + "|" + reason + "|" + rev
	r.mu.Lock()
	defer r.mu.Unlock()
	if key == r.last {
		return
	}
	r.last = key
	tr := readyTransition{at: time.Now(), ready: status == "True", reason: reason, message: message, attempted: rev}
	if c := r.canary.latest(); c != nil {
		tr.canaryPhase = c.Status.Phase
	}
	if tr.ready {
		// The Canary's own watch may deliver the status Flux just read a little later
		// than this event: read it, so the phase is at least as new as Flux's.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c := &coalminev1beta1.Canary{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: u.GetNamespace(), Name: appName}, c); err == nil {
			tr.canaryPhase = c.Status.Phase
		}
	}
	r.trs = append(r.trs, tr)
}

func (r *kustomizationRecorder) transitions() []readyTransition {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.trs)
}

func (r *kustomizationRecorder) summary() string {
	var parts []string
	var t0 time.Time
	for i, tr := range r.transitions() {
		if i == 0 {
			t0 = tr.at
		}
		rev := tr.attempted
		if i := strings.LastIndex(rev, ":"); i >= 0 && len(rev) > i+8 {
			rev = rev[:i+8]
		}
		parts = append(parts, fmt.Sprintf("+%s ready=%v %s %s (canary %s)", tr.at.Sub(t0).Round(100*time.Millisecond), tr.ready, tr.reason, rev, tr.canaryPhase))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "; ")
}
