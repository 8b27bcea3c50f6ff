package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/manifests"
	"github.com/coalmine-dev/coalmine/sandbox"
)

// The shared sandbox and an admin client on it, set up by TestMain.
var (
	sb  *sandbox.Sandbox
	k8s client.Client
	// scheme knows client-go's types, apiextensions and coalmine's API.
	scheme = runtime.NewScheme()
)

// fieldManager is the server-side apply field manager of everything tests apply, as a
// user's GitOps tool would be.
const fieldManager = "coalmine-e2e"

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(apiextensionsv1.AddToScheme(scheme))
	utilruntime.Must(coalminev1beta1.AddToScheme(scheme))
}

// connect creates the admin client of the shared sandbox.
func connect() error {
	c, err := client.New(sb.Config, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("create admin client: %w", err)
	}
	k8s = c
	return nil
}

// newClient returns a client acting as cfg (e.g. sb.Impersonate(...)).
func newClient(t *testing.T, cfg *rest.Config) client.Client {
	t.Helper()
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatalf("create client: %v", err)
	}
	return c
}

// testContext is a context that ends with the test, bounded by timeout.
func testContext(t *testing.T, timeout time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// newNamespace creates a namespace in Kuma's mesh (kuma.io/sidecar-injection: enabled,
// so coalmine's webhooks see it) with the extra labels, named after the test with a
// random suffix, and deletes it when the test ends.
func newNamespace(t *testing.T, labels map[string]string) string {
	t.Helper()
	all := map[string]string{coalminev1beta1.LabelSidecarInjection: "enabled"}
	for k, v := range labels {
		all[k] = v
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   namespaceName(t.Name()),
		Labels: all,
	}}
	ctx := testContext(t, 30*time.Second)
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		// The test's context is done by now.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := k8s.Delete(ctx, ns); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete namespace %s: %v", ns.Name, err)
		}
	})
	return ns.Name
}

// namespaceName turns a test name into a DNS label: lower case, dashes, at most 63
// characters with a random suffix.
func namespaceName(testName string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(testName) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			if s := b.String(); s != "" && !strings.HasSuffix(s, "-") {
				b.WriteByte('-')
			}
		}
	}
	name := strings.Trim(b.String(), "-")
	if len(name) > 50 {
		name = strings.Trim(name[:50], "-")
	}
	return name + "-" + utilrand.String(6)
}

// apply server-side applies obj as fieldManager, forcing ownership like kubectl apply
// --server-side --force-conflicts and Flux do, and fails the test on error. obj is
// updated with what the apiserver returned.
func apply(t *testing.T, obj client.Object) {
	t.Helper()
	if err := tryApply(testContext(t, 30*time.Second), obj); err != nil {
		t.Fatalf("apply %T %s: %v", obj, client.ObjectKeyFromObject(obj), err)
	}
}

// tryApply is apply returning the error, for objects the apiserver should refuse.
// opts may add e.g. client.DryRunAll.
func tryApply(ctx context.Context, obj client.Object, opts ...client.ApplyOption) error {
	u, err := toUnstructured(obj)
	if err != nil {
		return err
	}
	opts = append([]client.ApplyOption{client.FieldOwner(fieldManager), client.ForceOwnership}, opts...)
	if err := k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), opts...); err != nil {
		return err
	}
	if uo, ok := obj.(*unstructured.Unstructured); ok {
		uo.Object = u.Object
		return nil
	}
	return runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, obj)
}

// requireRefused checks that the apiserver refuses obj both as a server-side apply and
// as a create (dry runs, nothing is stored), and that the create's error is a refusal
// (Invalid or Forbidden: schema, admission policy or webhook) mentioning want. A type
// mismatch fails server-side apply before validation with a less helpful error, hence
// the create.
func requireRefused(t *testing.T, obj client.Object, want string) {
	t.Helper()
	ctx := testContext(t, 30*time.Second)
	if err := tryApply(ctx, obj.DeepCopyObject().(client.Object), client.DryRunAll); err == nil {
		t.Errorf("server-side apply of %T %s accepted, want it refused for %q", obj, client.ObjectKeyFromObject(obj), want)
	}
	err := k8s.Create(ctx, obj.DeepCopyObject().(client.Object), client.DryRunAll)
	switch {
	case err == nil:
		t.Fatalf("create of %T %s accepted, want it refused for %q", obj, client.ObjectKeyFromObject(obj), want)
	case !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err):
		t.Fatalf("create of %T %s failed with %v, want an Invalid or Forbidden refusal", obj, client.ObjectKeyFromObject(obj), err)
	case !strings.Contains(err.Error(), want):
		t.Fatalf("refusal %q does not mention %q", err, want)
	}
}

// toUnstructured converts a typed object for apply: apiVersion and kind from the
// scheme, without status and the zero creationTimestamps typed objects carry.
func toUnstructured(obj client.Object) (*unstructured.Unstructured, error) {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		return u.DeepCopy(), nil
	}
	gvk, err := apiutil.GVKForObject(obj, scheme)
	if err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(gvk)
	delete(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "spec", "template", "metadata", "creationTimestamp")
	return u, nil
}

// readYAML reads the objects of a multi-document YAML file, e.g. testdata/seed-canary.yaml.
func readYAML(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	objs, err := parseYAML(data)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return objs
}

// parseYAML decodes the objects of a multi-document YAML manifest (manifests.Objects).
var parseYAML = manifests.Objects

// waitFor polls cond every 100 ms until it returns true, failing the test after
// timeout with the last error cond returned (return an error saying what is not there
// yet: it is the failure message).
func waitFor(t *testing.T, timeout time.Duration, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	if err := sandbox.Poll(t.Context(), timeout, 100*time.Millisecond, cond); err != nil {
		t.Fatalf("waited: %v", err)
	}
}

// testDeployment returns a Deployment like the seed's app: label app=<name>, one
// container with port 8080 named http, schedulable on the sandbox's fake node (whose
// kwok makes its pods Ready without running them). env becomes the container's
// environment, e.g. the traffic simulator's behaviour.
func testDeployment(namespace, name string, replicas int32, env map[string]string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name:  "app",
					Image: "ghcr.io/coalmine-dev/demo-app:v1",
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
				}}},
			},
		},
	}
	for k, v := range env {
		d.Spec.Template.Spec.Containers[0].Env = append(d.Spec.Template.Spec.Containers[0].Env, corev1.EnvVar{Name: k, Value: v})
	}
	sandbox.SchedulableOnFakeNode(&d.Spec.Template.Spec)
	return d
}

// deploymentReady reports whether d has rolled out: its generation observed and all
// replicas updated, ready and available.
func deploymentReady(ctx context.Context, key client.ObjectKey) (bool, error) {
	d := &appsv1.Deployment{}
	if err := k8s.Get(ctx, key, d); err != nil {
		return false, err
	}
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	if s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.ReadyReplicas == want &&
		s.AvailableReplicas == want && s.Replicas == want {
		return true, nil
	}
	return false, fmt.Errorf("deployment %s: generation %d/%d, replicas %d updated %d ready %d available %d, want %d",
		key, s.ObservedGeneration, d.Generation, s.Replicas, s.UpdatedReplicas, s.ReadyReplicas, s.AvailableReplicas, want)
}
