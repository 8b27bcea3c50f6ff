package meshsim

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
)

// Pod env vars that set a pod's simulated behaviour (first container).
const (
	EnvErrorRate = "SIM_ERROR_RATE"
	EnvLatencyMs = "SIM_LATENCY_MS"
)

const (
	defaultLatencyMs = 20
	defaultMesh      = "default"
	ppm              = 1_000_000 // error rates are kept in parts per million, for exact counting
)

// serviceRef is one port of a Service: a kuma.io/service tag.
type serviceRef struct {
	tag       string
	name      string
	namespace string
	port      int32
	portName  string
	// callers are this apex's callers besides the users (AnnotationCallers).
	callers []caller
}

// Tag is Kuma's kuma.io/service tag of a Kubernetes Service port.
func Tag(service, namespace string, port int32) string {
	return fmt.Sprintf("%s_%s_svc_%d", service, namespace, port)
}

// endpoint is a Ready pod behind a tag.
type endpoint struct {
	pod       string
	errPPM    int64
	latencyMs float64
}

// mesh is what one step sees of the cluster(s).
type mesh struct {
	meshOf     map[string]string // namespace -> Kuma mesh
	services   map[types.NamespacedName]*corev1.Service
	endpoints  map[string][]endpoint // tag -> Ready pods, by name
	candidates []serviceRef          // ports of Services that may be apexes, by tag
	loadTested []loadTest            // Services the load tester calls directly, by tag

	meshHTTPRoutes []meshHTTPRoute // by namespace/name
	trafficRoutes  []trafficRoute  // by name
}

// loadTest is a Service port the load tester calls directly (AnnotationLoadTest).
type loadTest struct {
	ref    serviceRef
	caller caller
}

// call is one caller's traffic for a step: the apex it calls and where its Envoy sends it.
type call struct {
	apex   serviceRef
	mesh   string
	caller caller
	split  []backendWeight // route order; zero weights included (Envoy has the cluster)
}

// key names the call's state (the carried fractions of its split and of its rate).
func (c call) key() string { return c.caller.name + "|" + c.apex.tag }

func (s *Simulator) readMesh(ctx context.Context) (*mesh, error) {
	m := &mesh{
		services:  map[types.NamespacedName]*corev1.Service{},
		endpoints: map[string][]endpoint{},
	}
	var err error
	if m.meshOf, err = s.readNamespaces(ctx); err != nil {
		return nil, err
	}
	for _, ns := range sortedKeys(m.meshOf) {
		var svcs corev1.ServiceList
		if err := s.opts.Client.List(ctx, &svcs, client.InNamespace(ns)); err != nil {
			return nil, fmt.Errorf("list services in %s: %w", ns, err)
		}
		var pods corev1.PodList
		if err := s.opts.Client.List(ctx, &pods, client.InNamespace(ns)); err != nil {
			return nil, fmt.Errorf("list pods in %s: %w", ns, err)
		}
		m.addNamespace(ctx, ns, svcs.Items, pods.Items)
	}
	sort.Slice(m.candidates, func(i, j int) bool { return m.candidates[i].tag < m.candidates[j].tag })
	sort.Slice(m.loadTested, func(i, j int) bool { return m.loadTested[i].ref.tag < m.loadTested[j].ref.tag })

	m.setRoutes(s.readRoutes(ctx, s.meshHTTPRouteSources), s.readRoutes(ctx, s.trafficRouteSources))
	return m, nil
}

// rereadRoutesLive replaces m's routes by a live read of them (readRoutesLive); it reports
// whether any was read live, so that the step plans its calls again.
func (s *Simulator) rereadRoutesLive(ctx context.Context, m *mesh) bool {
	mhr, liveMHR := s.readRoutesLive(ctx, s.meshHTTPRouteSources)
	tr, liveTR := s.readRoutesLive(ctx, s.trafficRouteSources)
	if !liveMHR && !liveTR {
		return false
	}
	m.setRoutes(mhr, tr)
	return true
}

// setRoutes parses the listed routes into m.
func (m *mesh) setRoutes(mhr, tr []unstructured.Unstructured) {
	m.meshHTTPRoutes, m.trafficRoutes = nil, nil
	for i := range mhr {
		m.meshHTTPRoutes = append(m.meshHTTPRoutes, parseMeshHTTPRoute(&mhr[i]))
	}
	for i := range tr {
		m.trafficRoutes = append(m.trafficRoutes, parseTrafficRoute(&tr[i]))
	}
}

// readNamespaces returns the namespaces whose Services are called, with their mesh.
func (s *Simulator) readNamespaces(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	if s.opts.Namespaces != nil {
		for _, ns := range s.opts.Namespaces {
			out[ns] = s.namespaceMesh(ctx, ns)
		}
		return out, nil
	}
	var list corev1.NamespaceList
	if err := s.opts.Client.List(ctx, &list, client.MatchingLabels{coalminev1beta1.LabelSidecarInjection: "enabled"}); err != nil {
		return nil, fmt.Errorf("list mesh namespaces: %w", err)
	}
	for i := range list.Items {
		out[list.Items[i].Name] = meshOfNamespace(&list.Items[i])
	}
	return out, nil
}

// namespaceMesh looks up the mesh of an explicitly watched namespace once: the label is
// cosmetic, and a reader without access to Namespaces must not stall every step.
func (s *Simulator) namespaceMesh(ctx context.Context, name string) string {
	if mesh, ok := s.knownMeshes[name]; ok {
		return mesh
	}
	mesh := defaultMesh
	getCtx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var ns corev1.Namespace
	if err := s.opts.Client.Get(getCtx, client.ObjectKey{Name: name}, &ns); err == nil {
		mesh = meshOfNamespace(&ns)
	} else if !apierrors.IsNotFound(err) {
		log.FromContext(ctx).V(1).Info("Cannot read namespace; labelling its traffic with the default mesh", "namespace", name, "error", err.Error())
	}
	if s.knownMeshes == nil {
		s.knownMeshes = map[string]string{}
	}
	s.knownMeshes[name] = mesh
	return mesh
}

func meshOfNamespace(ns *corev1.Namespace) string {
	if m := ns.Annotations[coalminev1beta1.AnnotationMesh]; m != "" {
		return m
	}
	if m := ns.Labels[coalminev1beta1.AnnotationMesh]; m != "" {
		return m
	}
	return defaultMesh
}

func (m *mesh) addNamespace(ctx context.Context, ns string, svcs []corev1.Service, pods []corev1.Pod) {
	logger := log.FromContext(ctx)
	names := map[string]bool{}
	for i := range svcs {
		names[svcs[i].Name] = true
	}
	m.setEndpoints(ctx, svcs, pods)
	for i := range svcs {
		svc := &svcs[i]
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		m.services[types.NamespacedName{Namespace: ns, Name: svc.Name}] = svc

		// <app>-primary and <app>-canary are the backends of <app>'s route, never called
		// directly, even before the route exists.
		backend := false
		for _, suffix := range []string{coalminev1beta1.PrimarySuffix, coalminev1beta1.CanarySuffix} {
			if base, ok := strings.CutSuffix(svc.Name, suffix); ok && names[base] {
				backend = true
			}
		}
		callers, err := callersOf(svc)
		if err != nil {
			logger.V(1).Info("Ignoring the extra callers of a Service", "service", klog.KObj(svc), "error", err.Error())
		}
		lt, loadTested := loadTestOf(svc)
		for _, p := range svc.Spec.Ports {
			ref := serviceRef{tag: Tag(svc.Name, ns, p.Port), name: svc.Name, namespace: ns, port: p.Port, portName: p.Name, callers: callers}
			if !backend {
				m.candidates = append(m.candidates, ref)
			}
			if loadTested {
				m.loadTested = append(m.loadTested, loadTest{ref: ref, caller: lt})
			}
		}
	}
}

func isReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// behaviourOf reads a pod's simulated error rate and latency from its first container's env.
func behaviourOf(logger logr.Logger, p *corev1.Pod) endpoint {
	ep := endpoint{pod: p.Name, latencyMs: defaultLatencyMs}
	if len(p.Spec.Containers) == 0 {
		return ep
	}
	for _, env := range p.Spec.Containers[0].Env {
		switch env.Name {
		case EnvErrorRate:
			if r, ok := parseRate(env.Value); ok {
				ep.errPPM = int64(math.Round(r * ppm))
			} else {
				logger.V(1).Info("Ignoring invalid env var", "pod", klog.KObj(p), "name", env.Name, "value", env.Value)
			}
		case EnvLatencyMs:
			if l, ok := parseLatencyMs(env.Value); ok {
				ep.latencyMs = l
			} else {
				logger.V(1).Info("Ignoring invalid env var", "pod", klog.KObj(p), "name", env.Name, "value", env.Value)
			}
		}
	}
	return ep
}

// parseRate accepts a fraction ("0.1") or a percentage ("10%"), clamped to 0..1.
func parseRate(v string) (float64, bool) {
	v = strings.TrimSpace(v)
	scale := 1.0
	if p, ok := strings.CutSuffix(v, "%"); ok {
		v, scale = p, 100
	}
	r, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(r) {
		return 0, false
	}
	return math.Min(math.Max(r/scale, 0), 1), true
}

// parseLatencyMs accepts milliseconds ("300") or a duration ("300ms", "1.5s").
func parseLatencyMs(v string) (float64, bool) {
	v = strings.TrimSpace(v)
	if l, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(l) {
		return math.Max(l, 0), true
	}
	if d, err := time.ParseDuration(v); err == nil {
		return math.Max(float64(d)/float64(time.Millisecond), 0), true
	}
	return 0, false
}

// plan decides which apexes are called and how each caller's Envoy splits the requests:
// the users' and the extra callers of each apex through the routes, then the load tester's
// direct calls.
func (m *mesh) plan() []call {
	type routedCall struct {
		apex   serviceRef
		caller caller
		split  []backendWeight
	}
	var routed []routedCall
	backends := map[string]bool{}
	for _, c := range m.candidates {
		for _, cl := range append([]caller{{name: CallerUsers, req: usersRequest}}, c.callers...) {
			split := m.route(c, cl.req)
			for _, b := range split {
				if b.tag != c.tag {
					backends[b.tag] = true
				}
			}
			routed = append(routed, routedCall{apex: c, caller: cl, split: split})
		}
	}
	var calls []call
	for _, rc := range routed {
		c := rc.apex
		if backends[c.tag] {
			continue // another apex's route sends traffic here: it is not called directly
		}
		split := rc.split
		if split == nil {
			split = []backendWeight{{tag: c.tag, weight: 1}}
		}
		// Only apps that exist are called: the apex or a weighted backend has Ready pods.
		active := len(m.endpoints[c.tag]) > 0
		for _, b := range split {
			active = active || (b.weight > 0 && len(m.endpoints[b.tag]) > 0)
		}
		if active {
			calls = append(calls, call{apex: c, mesh: m.meshOf[c.namespace], caller: rc.caller, split: split})
		}
	}
	// The load tester calls its Services by their own tag while they have Ready pods: no
	// route applies (Kuma routes the apex's tag, not the canary's).
	for _, lt := range m.loadTested {
		if len(m.endpoints[lt.ref.tag]) > 0 {
			calls = append(calls, call{apex: lt.ref, mesh: m.meshOf[lt.ref.namespace], caller: lt.caller,
				split: []backendWeight{{tag: lt.ref.tag, weight: 1}}})
		}
	}
	return calls
}

// route is the split of the route that applies to request req to an apex, nil if none
// does. As in Kuma 2.x, a MeshHTTPRoute takes precedence over a TrafficRoute; among
// TrafficRoutes an exact destination beats a wildcard; ties go to the first by name.
func (m *mesh) route(c serviceRef, req request) []backendWeight {
	for i := range m.meshHTTPRoutes {
		if split, ok := m.meshHTTPRoutes[i].routeFor(c, m.services, req); ok {
			return split
		}
	}
	for _, exact := range []bool{true, false} {
		for i := range m.trafficRoutes {
			if split, ok := m.trafficRoutes[i].routeFor(c.tag, exact, req); ok {
				return split
			}
		}
	}
	return nil
}
