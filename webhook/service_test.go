package webhook

import (
	"context"
	"errors"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

func testScheme(t testing.TB) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := v1beta1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func meshNamespace(name string, annotations map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:        name,
		Labels:      map[string]string{v1beta1.LabelSidecarInjection: "enabled", "kubernetes.io/metadata.name": name},
		Annotations: annotations,
	}}
}

func canary(name, target, service string) *v1beta1.Canary {
	return &v1beta1.Canary{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNamespace},
		Spec: v1beta1.CanarySpec{
			TargetRef: v1beta1.LocalObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: target},
			Service:   v1beta1.CanaryService{Name: service, Port: 8080},
		},
	}
}

func service(name string, selector map[string]string) *corev1.Service {
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNamespace},
		Spec: corev1.ServiceSpec{
			Selector: selector,
			Ports:    []corev1.ServicePort{{Name: "http", Port: 8080}},
		},
	}
}

func TestServiceValidator(t *testing.T) {
	alice := managed(depV1, revV1)
	bob := with(deployment("bob:1"), func(d *appsv1.Deployment) {
		d.Name = "bob"
		d.Labels = map[string]string{"app": "bob"}
		d.Spec.Selector.MatchLabels = map[string]string{"app": "bob"}
		d.Spec.Template.Labels = map[string]string{"app": "bob", "team": "payments"}
	}) // not managed
	objects := []client.Object{
		meshNamespace(testNamespace, nil),
		meshNamespace("apps-warn", map[string]string{v1beta1.AnnotationServicePolicy: v1beta1.ServicePolicyWarn}),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "outside-mesh"}},
		alice, bob,
		canary("alice", "alice", ""),
		canary("carol", "carol", "carol-web"),
		with(managed(depV1, revV1), func(d *appsv1.Deployment) { d.Namespace = "apps-warn" }),
		func() *v1beta1.Canary { c := canary("alice", "alice", ""); c.Namespace = "apps-warn"; return c }(),
	}

	cases := []struct {
		name      string
		user      string
		namespace string
		op        admissionv1.Operation
		svc       *corev1.Service
		old       *corev1.Service
		denied    []string // substrings of the denial
		warned    []string // substrings of a warning when allowed
	}{{
		name: "bare Service selecting a managed Deployment's pods is denied",
		user: adminUser, svc: service("alice-bare", map[string]string{"app": "alice"}),
		denied: []string{
			"Service apps-a-mesh-a/alice-bare selects pods of Deployment alice (selector app=alice), which Canary apps-a-mesh-a/alice manages: traffic through it would bypass the canary split. Use the Service alice that coalmine owns, or set the Canary's spec.service",
		},
	}, {
		name: "bare Service selecting the canary pods is denied",
		user: adminUser, svc: service("alice-direct", map[string]string{"app": "alice-canary"}),
		denied: []string{"selects the canary pods of Deployment alice (selector app=alice-canary), which Canary apps-a-mesh-a/alice manages"},
	}, {
		name: "update that turns a Service's selector onto managed pods is denied",
		user: fluxUser, op: admissionv1.Update,
		svc: service("metrics", map[string]string{"app": "alice"}), old: service("metrics", map[string]string{"app": "other"}),
		denied: []string{"selects pods of Deployment alice"},
	}, {
		name: "apex name of a Canary is reserved",
		user: adminUser, svc: service("alice", map[string]string{"app": "alice"}),
		denied: []string{"Service apps-a-mesh-a/alice takes a name reserved by Canary apps-a-mesh-a/alice: coalmine alone writes its Services alice, alice-primary and alice-canary"},
	}, {
		name: "primary name of a Canary is reserved even with an unrelated selector",
		user: adminUser, svc: service("alice-primary", map[string]string{"app": "nothing"}),
		denied: []string{"takes a name reserved by Canary apps-a-mesh-a/alice"},
	}, {
		name: "canary name follows spec.service.name",
		user: adminUser, svc: service("carol-web-canary", nil),
		denied: []string{"takes a name reserved by Canary apps-a-mesh-a/carol: coalmine alone writes its Services carol-web, carol-web-primary and carol-web-canary"},
	}, {
		name: "an annotation-only update of a reserved Service passes (Kuma's zone CP annotates every Service)",
		user: "system:serviceaccount:kuma-system:kuma-control-plane", op: admissionv1.Update,
		svc: func() *corev1.Service {
			s := service("alice", map[string]string{"app": "alice"})
			s.Annotations = map[string]string{"ingress.kubernetes.io/service-upstream": "true"}
			return s
		}(),
		old: service("alice", map[string]string{"app": "alice"}),
	}, {
		name: "a selector change of a reserved Service by someone else is still denied",
		user: adminUser, op: admissionv1.Update,
		svc: service("alice", map[string]string{"app": "other"}), old: service("alice", map[string]string{"app": "alice"}),
		denied: []string{"takes a name reserved by Canary apps-a-mesh-a/alice"},
	}, {
		name: "the target's own name is free when spec.service.name differs",
		user: adminUser, svc: service("carol", map[string]string{"app": "carol"}),
	}, {
		name: "coalmine's own Services pass",
		user: controllerUser, svc: service("alice-primary", map[string]string{"app": "alice"}),
	}, {
		name: "a Service selecting an unmanaged Deployment passes",
		user: adminUser, svc: service("bob", map[string]string{"app": "bob"}),
	}, {
		name: "a selector that is not a subset of the template labels passes",
		user: adminUser, svc: service("alice-eu", map[string]string{"app": "alice", "zone": "eu"}),
	}, {
		name: "a Service without selector passes",
		user: adminUser, svc: service("external", nil),
	}, {
		name: "an ExternalName Service passes whatever its selector",
		user: adminUser, svc: svcWith(service("alias", map[string]string{"app": "alice"}), func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeExternalName
			s.Spec.ExternalName = "alice.example.com"
		}),
	}, {
		name: "metadata-only update of a bare Service passes (garbage collector, finalizers)",
		user: "system:serviceaccount:kube-system:generic-garbage-collector", op: admissionv1.Update,
		svc: svcWith(service("alice-bare", map[string]string{"app": "alice"}), func(s *corev1.Service) { s.Finalizers = []string{"x"} }),
		old: service("alice-bare", map[string]string{"app": "alice"}),
	}, {
		name: "warn policy allows with the same sentence as a warning",
		user: adminUser, namespace: "apps-warn", svc: svcWith(service("alice-bare", map[string]string{"app": "alice"}), func(s *corev1.Service) { s.Namespace = "apps-warn" }),
		warned: []string{"Service apps-warn/alice-bare selects pods of Deployment alice (selector app=alice), which Canary apps-warn/alice manages"},
	}, {
		name: "a namespace outside the mesh is not checked",
		user: adminUser, namespace: "outside-mesh", svc: svcWith(service("alice", map[string]string{"app": "alice"}), func(s *corev1.Service) { s.Namespace = "outside-mesh" }),
	}}

	v := &ServiceValidator{
		Client:             fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(objects...).Build(),
		ControllerUsername: controllerUser,
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			op := tc.op
			if op == "" {
				op = admissionv1.Create
			}
			var old any
			if tc.old != nil {
				old = tc.old
			}
			req := review(t, op, tc.user, servicesResource, tc.svc, old)
			if tc.namespace != "" {
				req.Namespace = tc.namespace
			}
			resp := v.Handle(context.Background(), req)
			if len(tc.denied) > 0 {
				if resp.Allowed {
					t.Fatalf("allowed, want denied (warnings %q)", resp.Warnings)
				}
				for _, s := range tc.denied {
					if !strings.Contains(resp.Result.Message, s) {
						t.Errorf("denial %q\ndoes not say %q", resp.Result.Message, s)
					}
				}
				return
			}
			if !resp.Allowed {
				t.Fatalf("denied: %s", resp.Result.Message)
			}
			warnings := strings.Join(resp.Warnings, "\n")
			for _, s := range tc.warned {
				if !strings.Contains(warnings, s) {
					t.Errorf("warnings %q\ndo not say %q", warnings, s)
				}
			}
			if len(tc.warned) == 0 && warnings != "" {
				t.Errorf("unexpected warnings %q", warnings)
			}
		})
	}
}

func svcWith(s *corev1.Service, f func(*corev1.Service)) *corev1.Service {
	s = s.DeepCopy()
	f(s)
	return s
}

// With failurePolicy Ignore the Service webhook fails open; a lookup error does the same,
// and says so, rather than denying every Service while the cache is unhappy.
func TestServiceValidatorFailsOpenOnLookupErrors(t *testing.T) {
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).
		WithObjects(meshNamespace(testNamespace, nil)).
		WithInterceptorFuncs(interceptor.Funcs{
			List: func(context.Context, client.WithWatch, client.ObjectList, ...client.ListOption) error {
				return errors.New("informer not synced")
			},
		}).Build()
	v := &ServiceValidator{Client: c, ControllerUsername: controllerUser}
	resp := v.Handle(context.Background(), review(t, admissionv1.Create, adminUser, servicesResource,
		service("alice-bare", map[string]string{"app": "alice"}), nil))
	if !resp.Allowed || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "informer not synced") {
		t.Fatalf("want allowed with a warning, got allowed=%v warnings=%q", resp.Allowed, resp.Warnings)
	}
}
