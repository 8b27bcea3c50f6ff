package rollout

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

func optInDeployment(ann map[string]string) *appsv1.Deployment {
	d := targetDeployment()
	d.Annotations = map[string]string{v1beta1.AnnotationCanary: OptInEnabled}
	for k, v := range ann {
		d.Annotations[k] = v
	}
	return d
}

func TestOptInCanary(t *testing.T) {
	tests := []struct {
		name         string
		ann          map[string]string
		modify       func(*appsv1.Deployment)
		wantErr      bool
		wantWarnings int
		check        func(t *testing.T, c *v1beta1.Canary)
	}{
		{
			name: "defaults: first container port, Flagger schedule, the seed's metrics",
			check: func(t *testing.T, c *v1beta1.Canary) {
				if c.Name != "alice" || c.Spec.TargetRef.Name != "alice" || c.Spec.TargetRef.Kind != "Deployment" {
					t.Errorf("names %s -> %+v", c.Name, c.Spec.TargetRef)
				}
				if c.Spec.Service.Port != 8080 || c.Spec.Service.Apex.Annotations["8080.service.kuma.io/protocol"] != "http" {
					t.Errorf("service %+v", c.Spec.Service)
				}
				a := c.Spec.Analysis
				if a.Interval != "1m" || a.Threshold != 5 || a.MaxWeight != 50 || a.StepWeight != 10 {
					t.Errorf("analysis %+v", a)
				}
				if len(a.Metrics) != 2 || a.Metrics[0].Name != v1beta1.MetricRequestSuccessRate || a.Metrics[0].Threshold != 99 ||
					a.Metrics[1].Name != v1beta1.MetricRequestDuration || a.Metrics[1].Threshold != 500 {
					t.Errorf("metrics %+v", a.Metrics)
				}
			},
		},
		{
			name: "overrides from annotations",
			ann: map[string]string{AnnotationPort: "9090", AnnotationInterval: "30s", AnnotationThreshold: "3",
				AnnotationMaxWeight: "40", AnnotationStepWeight: "20", v1beta1.AnnotationRouteKind: v1beta1.RouteKindMeshHTTPRoute},
			check: func(t *testing.T, c *v1beta1.Canary) {
				a := c.Spec.Analysis
				if c.Spec.Service.Port != 9090 || a.Interval != "30s" || a.Threshold != 3 || a.MaxWeight != 40 || a.StepWeight != 20 {
					t.Errorf("port %d analysis %+v", c.Spec.Service.Port, a)
				}
				if c.Annotations[v1beta1.AnnotationRouteKind] != v1beta1.RouteKindMeshHTTPRoute {
					t.Errorf("annotations %v", c.Annotations)
				}
			},
		},
		{
			name:         "invalid overrides fall back to defaults with warnings",
			ann:          map[string]string{AnnotationInterval: "soon", AnnotationThreshold: "-1", AnnotationMaxWeight: "200"},
			wantWarnings: 3,
			check: func(t *testing.T, c *v1beta1.Canary) {
				if a := c.Spec.Analysis; a.Interval != "1m" || a.Threshold != 5 || a.MaxWeight != 50 {
					t.Errorf("analysis %+v", a)
				}
			},
		},
		{
			name: "mesh from the pod template annotation",
			modify: func(d *appsv1.Deployment) {
				d.Spec.Template.Annotations = map[string]string{v1beta1.AnnotationMesh: "mesh-a"}
			},
			check: func(t *testing.T, c *v1beta1.Canary) {
				if c.Annotations[v1beta1.AnnotationMesh] != "mesh-a" {
					t.Errorf("annotations %v", c.Annotations)
				}
			},
		},
		{
			name:    "no port anywhere is an error",
			modify:  func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Ports = nil },
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := optInDeployment(tt.ann)
			if tt.modify != nil {
				tt.modify(d)
			}
			c, warnings, err := OptInCanary(d)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			if len(warnings) != tt.wantWarnings {
				t.Errorf("warnings %q, want %d", warnings, tt.wantWarnings)
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

func TestOptInReconciler(t *testing.T) {
	userCanary := seedCanary()
	userCanary.Name = "alice-by-hand"
	tests := []struct {
		name        string
		inMesh      bool
		annotation  string
		extra       []client.Object
		wantCanary  bool
		wantOwnedBy string
	}{
		{"annotated in a mesh namespace gets a canary", true, OptInEnabled, nil, true, "alice"},
		{"outside the mesh gets none", false, OptInEnabled, nil, false, ""},
		{"other annotation value gets none", true, "disabled", nil, false, ""},
		{"a user's canary for the deployment wins", true, OptInEnabled, []client.Object{userCanary}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			labels := map[string]string{}
			if tt.inMesh {
				labels[v1beta1.LabelSidecarInjection] = "enabled"
			}
			objs := append([]client.Object{
				&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}},
				optInDeployment(map[string]string{v1beta1.AnnotationCanary: tt.annotation}),
			}, tt.extra...)
			c := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(objs...).Build()
			r := &OptInReconciler{Client: c, Recorder: events.NewFakeRecorder(100)}
			req := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: "alice"}}
			if _, err := r.Reconcile(context.Background(), req); err != nil {
				t.Fatal(err)
			}
			got := &v1beta1.Canary{}
			err := c.Get(context.Background(), req.NamespacedName, got)
			if (err == nil) != tt.wantCanary {
				t.Fatalf("canary found=%v (%v), want %v", err == nil, err, tt.wantCanary)
			}
			if tt.wantCanary {
				if ref := metav1.GetControllerOf(got); ref == nil || ref.Kind != "Deployment" || ref.Name != tt.wantOwnedBy {
					t.Errorf("owner %+v", ref)
				}
			}
		})
	}
}

// Lifecycle: created, updated when an override changes, deleted when the annotation goes.
func TestOptInLifecycle(t *testing.T) {
	d := optInDeployment(nil)
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{v1beta1.LabelSidecarInjection: "enabled"}}}, d,
	).Build()
	rec := events.NewFakeRecorder(100)
	r := &OptInReconciler{Client: c, Recorder: rec}
	ctx := context.Background()
	req := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: "alice"}}
	reconcileAndGet := func() (*v1beta1.Canary, bool) {
		t.Helper()
		if _, err := r.Reconcile(ctx, req); err != nil {
			t.Fatal(err)
		}
		got := &v1beta1.Canary{}
		err := c.Get(ctx, req.NamespacedName, got)
		return got, err == nil
	}
	setAnn := func(k, v string) {
		t.Helper()
		if err := c.Get(ctx, req.NamespacedName, d); err != nil {
			t.Fatal(err)
		}
		if v == "" {
			delete(d.Annotations, k)
		} else {
			d.Annotations[k] = v
		}
		if err := c.Update(ctx, d); err != nil {
			t.Fatal(err)
		}
	}

	if _, ok := reconcileAndGet(); !ok {
		t.Fatal("no canary created")
	}
	setAnn(AnnotationStepWeight, "25")
	if got, _ := reconcileAndGet(); got.Spec.Analysis.StepWeight != 25 {
		t.Errorf("step weight %d after the override, want 25", got.Spec.Analysis.StepWeight)
	}
	setAnn(v1beta1.AnnotationCanary, "")
	if _, ok := reconcileAndGet(); ok {
		t.Error("canary kept after the opt-in annotation went")
	}
	var notes []string
	for len(rec.Events) > 0 {
		notes = append(notes, <-rec.Events)
	}
	if !strings.Contains(strings.Join(notes, "\n"), "OptOut") {
		t.Errorf("events %v", notes)
	}
}

// A second Canary for an already guarded Deployment waits; the first one keeps it.
func TestDuplicateTargetWaits(t *testing.T) {
	second := seedCanary()
	second.Name = "alice-too"
	second.CreationTimestamp = metav1.NewTime(start.Add(time.Minute))
	first := seedCanary()
	first.CreationTimestamp = metav1.NewTime(start)
	e := newEnv(t, first, second, targetDeployment())
	e.settle()
	e.key.Name = "alice-too"
	d := e.settle()
	c := e.canary()
	if cond := meta.FindStatusCondition(c.Status.Conditions, ConditionReady); cond == nil || cond.Reason != "DuplicateTarget" || !strings.Contains(cond.Message, "Canary alice") {
		t.Errorf("Ready %+v", cond)
	}
	if d == 0 {
		t.Error("no requeue: the waiting Canary would never notice the first one going")
	}
}
