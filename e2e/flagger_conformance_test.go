package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/sandbox/meshsim"
)

// Behaviour conformance with Flagger (issue 13): each Canary below runs once under
// Flagger v1.36.1 (flagger.app/v1beta1) and once under coalmine (the same object, only
// apiVersion changed), on the same simulated traffic judged by the same Prometheus, and
// both must route the same canary weights, end in the same phase and count the same
// failed checks. The differences coalmine keeps on purpose are listed in the README
// ("Deliberate differences, checked by FlaggerConformance").

// conformanceInterval is the analysis interval of every case: Flagger's minimum (it runs a
// shorter one at 10 s), so both controllers analyse at the same pace.
const conformanceInterval = 10 * time.Second

// conformanceOutcome is what a controller did with one release.
type conformanceOutcome struct {
	// Weights are the canary's share of the route, in percent, as the route went through
	// them, consecutive repeats folded: the canary's weight is comparable between the two
	// (Flagger splits between <app>-primary and <app>-canary, coalmine too, but its
	// primary Service selects the user's own Deployment).
	Weights []int
	// Phase is where the analysis ended: Succeeded or Failed.
	Phase string
	// FailedChecks are the failed checks counted when the analysis ended: the highest
	// status.failedChecks of the release (Flagger resets it to 0 as it goes Failed).
	FailedChecks int
}

func (o conformanceOutcome) String() string {
	return fmt.Sprintf("weights %v, %s, %d failed checks", o.Weights, o.Phase, o.FailedChecks)
}

// conformanceCase is one Canary, the seed's with changes, and one release of its app.
type conformanceCase struct {
	name string
	// app names the Deployment and the Canary, distinct per case: Flagger's TrafficRoute
	// is named after the app alone, and all Flagger cases share one namespace.
	app string
	// edit changes the seed's spec.analysis; hooks is the case's webhook server's URL,
	// which answers 500 under /fail and 200 elsewhere.
	edit func(analysis map[string]any, hooks string)
	// templates are the MetricTemplates (name -> query) the case's Canary refers to,
	// created under the controller's own group.
	templates map[string]string
	// env is the release's simulated behaviour (meshsim's pod env).
	env map[string]string
	// service is spec.service.name, the apex; default the app's name.
	service string
	// want is what Flagger does, and so what coalmine must do, but where coalmine is set:
	// a deliberate difference, listed in the README.
	want, coalmine *conformanceOutcome
}

// apex is the case's apex Service: the name of Flagger's TrafficRoute, and the base of the
// canary's kuma.io/service tag.
func (tc conformanceCase) apex() string {
	if tc.service != "" {
		return tc.service
	}
	return tc.app
}

// The queries of the cases' MetricTemplates, in Flagger's template language.
const (
	// errorPercentQuery is the percentage of the canary's requests that failed.
	errorPercentQuery = `100 - sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=~"{{ target }}-canary_{{ namespace }}_svc_[0-9a-zA-Z-]+",envoy_response_code!~"5.*"}[{{ interval }}])) / sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=~"{{ target }}-canary_{{ namespace }}_svc_[0-9a-zA-Z-]+"}[{{ interval }}])) * 100`
	// clientErrorsQuery is the rate of the canary's 4xx answers: the simulator answers none,
	// so the query has no series at all, the "no values found" of Flagger #1353.
	clientErrorsQuery = `sum(rate(envoy_cluster_upstream_rq{envoy_cluster_name=~"{{ target }}-canary_{{ namespace }}_svc_[0-9a-zA-Z-]+",envoy_response_code=~"4.*"}[{{ interval }}]))`
)

func conformanceCases() []conformanceCase {
	succeeded, failed := string(coalminev1beta1.PhaseSucceeded), string(coalminev1beta1.PhaseFailed)
	rolledBackAtFirstStep := &conformanceOutcome{Weights: []int{0, 5, 0}, Phase: failed, FailedChecks: 5}
	return []conformanceCase{{
		name: "Seed", app: "alice",
		want: &conformanceOutcome{Weights: weightSeq([]int{0}, seedSteps(), []int{0}), Phase: succeeded},
	}, {
		// Explicit steps; the seed's maxWeight stays and, as in Flagger, the last step is
		// the maximum.
		name: "StepWeights", app: "bob",
		edit: func(a map[string]any, _ string) {
			delete(a, "stepWeight")
			a["stepWeights"] = []any{int64(10), int64(25), int64(60)}
		},
		want: &conformanceOutcome{Weights: []int{0, 10, 25, 60, 0}, Phase: succeeded},
	}, {
		// A MetricTemplate judged by a thresholdRange: at most 1% errors, on a release that
		// fails half of its requests.
		name: "MetricTemplateThresholdRange", app: "carol",
		templates: map[string]string{"carol-error-percent": errorPercentQuery},
		edit: func(a map[string]any, _ string) {
			a["metrics"] = []any{map[string]any{
				"name": "error-percent", "interval": "30s",
				"templateRef":    map[string]any{"name": "carol-error-percent"},
				"thresholdRange": map[string]any{"max": int64(1)},
			}}
		},
		// Half the requests fail, so the canary's 5xx series starts with its 2xx one: at
		// 10% under load a first check could run before the 5xx series had two samples
		// in Prometheus, read 0% and pass (seen once with Flagger).
		env:  map[string]string{meshsim.EnvErrorRate: "0.5"},
		want: rolledBackAtFirstStep,
	}, {
		// A pre-rollout smoke test that fails: the canary never gets traffic, each interval
		// is a failed check.
		name: "PreRolloutWebhookFails", app: "dave",
		edit: func(a map[string]any, hooks string) {
			a["webhooks"] = []any{map[string]any{"name": "smoke-test", "type": "pre-rollout", "url": hooks + "/fail/smoke"}}
		},
		want: &conformanceOutcome{Weights: []int{0}, Phase: failed, FailedChecks: 5},
	}, {
		// A rollout webhook (an external check run with the metrics) that fails.
		name: "RolloutWebhookFails", app: "erin",
		edit: func(a map[string]any, hooks string) {
			a["webhooks"] = []any{map[string]any{"name": "acceptance", "url": hooks + "/fail/acceptance", "timeout": "5s"}}
		},
		want: rolledBackAtFirstStep,
	}, {
		// The seed's metrics pass, a third one has no data at all: by default a failed
		// check in both.
		name: "NoData", app: "frank",
		templates: map[string]string{"frank-client-errors": clientErrorsQuery},
		edit: func(a map[string]any, _ string) {
			a["metrics"] = append(a["metrics"].([]any), map[string]any{
				"name": "client-errors", "interval": "30s",
				"templateRef":    map[string]any{"name": "frank-client-errors"},
				"thresholdRange": map[string]any{"max": int64(1)},
			})
		},
		want: rolledBackAtFirstStep,
	}, {
		// Deliberate: a stepWeight that does not divide maxWeight. Flagger adds it past
		// maxWeight (40 + 20 = 60); coalmine's last step is maxWeight itself.
		name: "StepWeightPastMaxWeight", app: "grace",
		edit:     func(a map[string]any, _ string) { a["stepWeight"] = int64(20) },
		want:     &conformanceOutcome{Weights: []int{0, 20, 40, 60, 0}, Phase: succeeded},
		coalmine: &conformanceOutcome{Weights: []int{0, 20, 40, 50, 0}, Phase: succeeded},
	}, {
		// Deliberate: the apex is named apart from the Deployment. Flagger's builtin
		// queries look for <target>-canary, which nothing calls (its canary Service is
		// <service>-canary), so they find no data and the release is rolled back; coalmine's
		// query the canary Service it made.
		name: "ServiceNameDiffers", app: "ivan", service: "ivan-web",
		edit:     func(a map[string]any, _ string) { a["stepWeight"] = int64(25) },
		want:     &conformanceOutcome{Weights: []int{0, 25, 0}, Phase: failed, FailedChecks: 5},
		coalmine: &conformanceOutcome{Weights: []int{0, 25, 50, 0}, Phase: succeeded},
	}}
}

// TestFlaggerConformance runs every case under both controllers at once: Flagger watching
// one namespace for all its cases, coalmine (the shared one) a namespace per case.
func TestFlaggerConformance(t *testing.T) {
	t.Parallel()
	start := time.Now()
	sharedRollout(t) // coalmine and the mesh simulator
	cases := conformanceCases()
	flaggerNS := conformanceNamespace(t)
	var apps []string
	for _, tc := range cases {
		apps = append(apps, tc.apex())
	}
	flaggerStart(t, flaggerNS, apps...)
	t.Run("cases", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				testConformanceCase(t, tc, flaggerNS)
			})
		}
	})
	t.Logf("all cases under both controllers in %s", time.Since(start).Round(time.Second))
}

func testConformanceCase(t *testing.T, tc conformanceCase, flaggerNS string) {
	hooks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.URL.Path) >= 6 && r.URL.Path[:6] == "/fail/" {
			http.Error(w, "check failed", http.StatusInternalServerError)
		}
	}))
	t.Cleanup(hooks.Close)
	var flagger, coalmine conformanceOutcome
	t.Run("run", func(t *testing.T) {
		t.Run("Flagger", func(t *testing.T) {
			t.Parallel()
			flagger = runConformance(t, tc, flaggerAPIVersion, flaggerNS, tc.apex(), hooks.URL)
		})
		t.Run("coalmine", func(t *testing.T) {
			t.Parallel()
			ns := conformanceNamespace(t)
			coalmine = runConformance(t, tc, coalminev1beta1.GroupVersion.String(), ns, tc.apex()+"."+ns, hooks.URL)
		})
	})
	if t.Failed() {
		return
	}
	if !flagger.equal(*tc.want) {
		t.Errorf("Flagger: %s; the case expects %s", flagger, *tc.want)
	}
	switch {
	case tc.coalmine == nil && !coalmine.equal(flagger):
		t.Errorf("coalmine: %s; Flagger: %s", coalmine, flagger)
	case tc.coalmine != nil && !coalmine.equal(*tc.coalmine):
		t.Errorf("coalmine: %s; want the deliberate difference %s (Flagger: %s)", coalmine, *tc.coalmine, flagger)
	}
}

func (o conformanceOutcome) equal(p conformanceOutcome) bool {
	return slices.Equal(o.Weights, p.Weights) && o.Phase == p.Phase && o.FailedChecks == p.FailedChecks
}

// runConformance plays the case under the controller of apiVersion in namespace ns: v1
// and the Canary, Initialized, then the release, until the analysis ended. route is the
// name of the controller's TrafficRoute.
func runConformance(t *testing.T, tc conformanceCase, apiVersion, ns, route, hooks string) conformanceOutcome {
	ctx := testContext(t, 8*time.Minute)
	status := recordConformanceStatus(t, ctx, apiVersion, ns, tc.app)
	routes := recordConformanceRoute(t, ctx, route, meshsim.Tag(tc.apex()+coalminev1beta1.CanarySuffix, ns, 8080))
	for name, query := range tc.templates {
		apply(t, conformanceTemplate(apiVersion, ns, name, query))
	}
	apply(t, testDeployment(ns, tc.app, replicas, nil))
	apply(t, conformanceCanary(t, tc, apiVersion, ns, hooks))
	begin := time.Now()
	status.await(t, 2*time.Minute, "Initialized", func(s conformanceStatus) bool {
		return s.phase == string(coalminev1beta1.PhaseInitialized)
	})
	initialized := time.Since(begin)

	release := testDeployment(ns, tc.app, replicas, tc.env)
	release.Spec.Template.Spec.Containers[0].Image = imageV2
	apply(t, release)
	shipped := time.Now()
	final := status.await(t, 6*time.Minute, "the analysis to end", func(s conformanceStatus) bool {
		return s.progressed && (s.phase == string(coalminev1beta1.PhaseSucceeded) || s.phase == string(coalminev1beta1.PhaseFailed))
	})
	// A controller may record the end before its last route write lands.
	waitFor(t, 30*time.Second, func(context.Context) (bool, error) {
		if w, ok := routes.current(); !ok || w != 0 {
			return false, fmt.Errorf("route %s: exists %v, canary weight %d; want it back at 0", route, ok, w)
		}
		return true, nil
	})
	out := conformanceOutcome{Weights: routes.weights(), Phase: final.phase, FailedChecks: final.maxFailed}
	t.Logf("%s: Initialized in %s; the release %s in %s; phases %v", apiVersion, initialized.Round(time.Second),
		out, time.Since(shipped).Round(time.Second), final.phases)
	return out
}

// conformanceNamespace is a namespace in the mesh (labelled for Kuma's injection, which
// also puts it in coalmine's scope and the simulator's) annotated with the seed's mesh.
func conformanceNamespace(t *testing.T) string {
	t.Helper()
	name := newNamespace(t, nil)
	ns := &corev1.Namespace{}
	ctx := testContext(t, 30*time.Second)
	if err := k8s.Get(ctx, client.ObjectKey{Name: name}, ns); err != nil {
		t.Fatalf("get namespace: %v", err)
	}
	patch := client.MergeFrom(ns.DeepCopy())
	ns.Annotations = map[string]string{coalminev1beta1.AnnotationMesh: meshName}
	if err := k8s.Patch(ctx, ns, patch); err != nil {
		t.Fatalf("annotate namespace with its mesh: %v", err)
	}
	return name
}

// conformanceCanary is the seed's Canary for the case's app under apiVersion, at
// conformanceInterval, with the case's changes.
func conformanceCanary(t *testing.T, tc conformanceCase, apiVersion, ns, hooks string) *unstructured.Unstructured {
	t.Helper()
	c := readYAML(t, "testdata/seed-canary.yaml")[0]
	c.SetAPIVersion(apiVersion)
	c.SetNamespace(ns)
	c.SetName(tc.app)
	set := func(v any, path ...string) {
		if err := unstructured.SetNestedField(c.Object, v, path...); err != nil {
			t.Fatalf("set %v: %v", path, err)
		}
	}
	set(tc.app, "spec", "targetRef", "name")
	set(tc.apex(), "spec", "service", "name")
	set(conformanceInterval.String(), "spec", "analysis", "interval")
	if tc.edit != nil {
		a, _, err := unstructured.NestedMap(c.Object, "spec", "analysis")
		if err != nil {
			t.Fatalf("read analysis: %v", err)
		}
		tc.edit(a, hooks)
		set(a, "spec", "analysis")
	}
	return c
}

// conformanceTemplate is a Prometheus MetricTemplate under apiVersion's group, asking the
// sandbox's main Prometheus (Flagger's MetricTemplate needs the address).
func conformanceTemplate(apiVersion, ns, name, query string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": apiVersion, "kind": "MetricTemplate",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{
			"provider": map[string]any{"type": "prometheus", "address": sb.PrometheusURL},
			"query":    query,
		},
	}}
}

// conformanceStatus is what a watch of one Canary of either group saw of its status.
type conformanceStatus struct {
	phase  string
	phases []string // consecutive repeats folded
	// progressed: the Canary was seen in an analysis phase (it left Initialized).
	progressed bool
	maxFailed  int
}

type conformanceStatusRecorder struct {
	mu sync.Mutex
	s  conformanceStatus
}

func recordConformanceStatus(t *testing.T, ctx context.Context, apiVersion, ns, name string) *conformanceStatusRecorder {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		t.Fatalf("parse %s: %v", apiVersion, err)
	}
	r := &conformanceStatusRecorder{}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(gv.WithKind("CanaryList"))
	watchNamed(t, ctx, watchClient(t, sb.Config), list, ns, name, func(obj k8sruntime.Object, typ watch.EventType) {
		if typ == watch.Deleted {
			return
		}
		u := obj.(*unstructured.Unstructured)
		phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
		failed, _, _ := unstructured.NestedInt64(u.Object, "status", "failedChecks")
		r.mu.Lock()
		defer r.mu.Unlock()
		s := &r.s
		s.phase = phase
		if phase != "" && (len(s.phases) == 0 || s.phases[len(s.phases)-1] != phase) {
			s.phases = append(s.phases, phase)
		}
		switch coalminev1beta1.CanaryPhase(phase) {
		case coalminev1beta1.PhaseProgressing, coalminev1beta1.PhaseWaiting, coalminev1beta1.PhasePromoting,
			coalminev1beta1.PhaseFinalising, coalminev1beta1.PhaseWaitingPromotion:
			s.progressed = true
		}
		s.maxFailed = max(s.maxFailed, int(failed))
	})
	return r
}

func (r *conformanceStatusRecorder) get() conformanceStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.s
	s.phases = slices.Clone(s.phases)
	return s
}

// await waits until cond holds for the status seen, and returns it.
func (r *conformanceStatusRecorder) await(t *testing.T, timeout time.Duration, what string, cond func(conformanceStatus) bool) conformanceStatus {
	t.Helper()
	var s conformanceStatus
	waitFor(t, timeout, func(context.Context) (bool, error) {
		if s = r.get(); cond(s) {
			return true, nil
		}
		return false, errors.New("waiting for " + what + fmt.Sprintf(": phases so far %v, failed checks %d", s.phases, s.maxFailed))
	})
	return s
}

// recordConformanceRoute watches TrafficRoute name for the weight of canaryTag.
func recordConformanceRoute(t *testing.T, ctx context.Context, name, canaryTag string) *routeRecorder {
	r := &routeRecorder{name: name, canary: canaryTag}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(trafficRouteGVK.GroupVersion().WithKind(trafficRouteGVK.Kind + "List"))
	watchNamed(t, ctx, watchClient(t, sb.Config), list, "", name, func(obj k8sruntime.Object, typ watch.EventType) {
		r.observe(t, obj.(*unstructured.Unstructured), typ)
	})
	return r
}
