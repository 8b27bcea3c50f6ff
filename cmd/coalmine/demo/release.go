package demo

import (
	"context"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/sandbox"
)

// Release is one version of alice: the simulator reads its behaviour from the env.
type Release struct {
	Image     string
	ErrorRate float64
	LatencyMs int
}

// Deployment is alice at release r, as the app team's repository holds it.
func Deployment(r Release) *appsv1.Deployment {
	labels := map[string]string{"app": AppName}
	replicas := int32(3)
	latency := r.LatencyMs
	if latency == 0 {
		latency = 40
	}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: AppName, Namespace: AppNamespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Tolerations: []corev1.Toleration{sandbox.FakeNodeToleration},
					Containers: []corev1.Container{{
						Name:  AppName,
						Image: r.Image,
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
						Env: []corev1.EnvVar{
							{Name: "SIM_ERROR_RATE", Value: fmt.Sprint(r.ErrorRate)},
							{Name: "SIM_LATENCY_MS", Value: fmt.Sprint(latency)},
						},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
							HTTPGet: &corev1.HTTPGetAction{Path: "/actuator/health", Port: intstr.FromString("http")},
						}},
					}},
				},
			},
		},
	}
}

// ApplyDeployment server-side applies alice as Flux's kustomize-controller would.
func ApplyDeployment(ctx context.Context, c client.Client, r Release) error {
	return applyObject(ctx, c, Deployment(r))
}

// SeedCanary is the seed's Canary with the demo's interval.
func SeedCanary(interval time.Duration) (*v1beta1.Canary, error) {
	c := &v1beta1.Canary{}
	if err := yaml.UnmarshalStrict(seedCanary, c); err != nil {
		return nil, fmt.Errorf("decode the seed Canary: %w", err)
	}
	c.Spec.Analysis.Interval = interval.String()
	return c, nil
}

// applyObject server-side applies o as Flux's kustomize-controller would.
func applyObject(ctx context.Context, c client.Client, o client.Object) error {
	return applyAs(ctx, c, o, "kustomize-controller")
}

// seedMesh is the seed's mesh with its Prometheus metrics backend. It belongs to the
// Global CP: Kuma syncs meshes to the zones, and a zone's webhook refuses writes of them.
func seedMesh() *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kuma.io/v1alpha1", "kind": "Mesh",
		"metadata": map[string]any{"name": MeshName},
		"spec": map[string]any{"metrics": map[string]any{
			"enabledBackend": "prometheus-1",
			"backends":       []any{map[string]any{"name": "prometheus-1", "type": "prometheus"}},
		}},
	}}
}

// meshNamespace is the app team's namespace, opted in to the mesh (and so to coalmine).
func meshNamespace() *corev1.Namespace {
	return &corev1.Namespace{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        AppNamespace,
			Labels:      map[string]string{v1beta1.LabelSidecarInjection: "enabled"},
			Annotations: map[string]string{v1beta1.AnnotationMesh: MeshName},
		},
	}
}

// expectRunning checks what the story promises: alice's ready pods all run image, the
// Deployment is paused or not, and no canary Deployment is left.
func expectRunning(ctx context.Context, c client.Client, image string, paused bool) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var last error
	for {
		last = checkRunning(ctx, c, image, paused)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func checkRunning(ctx context.Context, c client.Client, image string, paused bool) error {
	var d appsv1.Deployment
	if err := c.Get(ctx, client.ObjectKey{Namespace: AppNamespace, Name: AppName}, &d); err != nil {
		return fmt.Errorf("read Deployment %s: %w", AppName, err)
	}
	if d.Spec.Paused != paused {
		return fmt.Errorf("Deployment %s paused=%t, want %t", AppName, d.Spec.Paused, paused)
	}
	var canary appsv1.Deployment
	if err := c.Get(ctx, client.ObjectKey{Namespace: AppNamespace, Name: AppName + v1beta1.CanarySuffix}, &canary); err == nil {
		return fmt.Errorf("Deployment %s%s still exists", AppName, v1beta1.CanarySuffix)
	}
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(AppNamespace), client.MatchingLabels{"app": AppName}); err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	running := 0
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		if got := p.Spec.Containers[0].Image; got != image {
			return fmt.Errorf("pod %s runs %s, want %s", p.Name, got, image)
		}
		running++
	}
	if running == 0 {
		return fmt.Errorf("no pod of %s runs", AppName)
	}
	return nil
}

// ship hands a release to the releaser and follows the Canary until it reaches want (or
// the other end).
func ship(ctx context.Context, c client.Client, rel releaser, tl *Timeline, p *Printer, w io.Writer,
	label string, r Release, want v1beta1.CanaryPhase, timeout time.Duration) (v1beta1.CanaryStatus, error) {
	how, err := rel.release(ctx, r, label)
	if err != nil {
		return v1beta1.CanaryStatus{}, err
	}
	fmt.Fprintln(w, "   "+how)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	started := false
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		var cn v1beta1.Canary
		if err := c.Get(ctx, client.ObjectKey{Namespace: AppNamespace, Name: AppName}, &cn); err != nil {
			return cn.Status, fmt.Errorf("read Canary: %w", err)
		}
		st := cn.Status
		if st.Phase == v1beta1.PhaseProgressing || st.Phase == v1beta1.PhasePromoting || st.Phase == v1beta1.PhaseFinalising {
			started = true
		}
		s := sampleOf(label, st, time.Now())
		if started {
			tl.Add(s)
			if p.Changed(s) {
				fmt.Fprintln(w, "   "+p.Line(s))
			}
		}
		if started && (st.Phase == v1beta1.PhaseSucceeded || st.Phase == v1beta1.PhaseFailed) {
			if st.Phase != want {
				return st, fmt.Errorf("%s release ended %s, want %s: %s", label, st.Phase, want, st.Message)
			}
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("%s release: no %s within %s (phase %s, weight %d)", label, want, timeout, st.Phase, st.CanaryWeight)
		case <-tick.C:
		}
	}
}

func waitPhase(ctx context.Context, c client.Client, timeout time.Duration, phases ...v1beta1.CanaryPhase) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		var cn v1beta1.Canary
		if err := c.Get(ctx, client.ObjectKey{Namespace: AppNamespace, Name: AppName}, &cn); err == nil {
			for _, p := range phases {
				if cn.Status.Phase == p {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// sampleOf is the Canary's state as the demo shows it: the weight, phase and failed
// checks, and the success rate and p99 the analysis last measured (the Canary's
// status.metrics), so every line and the picture show the values the decisions used.
func sampleOf(label string, st v1beta1.CanaryStatus, at time.Time) Sample {
	s := Sample{At: at, Release: label, Phase: string(st.Phase), Weight: st.CanaryWeight, Failed: st.FailedChecks,
		SuccessRate: math.NaN(), P99: math.NaN()}
	for _, m := range st.Metrics {
		v, err := strconv.ParseFloat(m.Value, 64)
		if err != nil {
			v = math.NaN()
		}
		switch m.Name {
		case v1beta1.MetricRequestSuccessRate:
			s.SuccessRate, s.SuccessOutcome = v, string(m.Outcome)
		case v1beta1.MetricRequestDuration:
			s.P99, s.P99Outcome = v, string(m.Outcome)
		}
	}
	return s
}
