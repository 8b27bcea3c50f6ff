package workload

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

func target() *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{
			Name: "alice", Namespace: "apps-a-mesh-a", Generation: 3,
			Labels: map[string]string{"app": "alice", "team": "a", v1beta1.LabelManaged: "true"},
			Annotations: map[string]string{
				v1beta1.AnnotationStableRevision:                   "aaa",
				v1beta1.AnnotationRevision:                         "bbb",
				"kubectl.kubernetes.io/last-applied-configuration": "{}",
				"deployment.kubernetes.io/revision":                "7",
				"owner":                                            "team-a",
			},
		},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](3),
			Paused:   true,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "alice"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "alice", "version": "v2"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "alice:2"}}},
			},
		},
	}
}

func TestCanaryDeployment(t *testing.T) {
	appSel := func(v string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app": v}}
	}
	tests := []struct {
		name   string
		modify func(*appsv1.Deployment)
		check  func(t *testing.T, got *appsv1.Deployment)
	}{
		{
			name: "selector and pod labels of the app are suffixed, others kept",
			check: func(t *testing.T, got *appsv1.Deployment) {
				if v := got.Spec.Selector.MatchLabels["app"]; v != "alice-canary" {
					t.Errorf("selector app = %q", v)
				}
				if v := got.Spec.Template.Labels["app"]; v != "alice-canary" {
					t.Errorf("pod label app = %q", v)
				}
				if v := got.Spec.Template.Labels["version"]; v != "v2" {
					t.Errorf("pod label version = %q, want it untouched", v)
				}
				if got.Name != "alice-canary" || got.Namespace != "apps-a-mesh-a" {
					t.Errorf("name = %s/%s", got.Namespace, got.Name)
				}
			},
		},
		{
			name: "replicas follow the target, never paused",
			check: func(t *testing.T, got *appsv1.Deployment) {
				if *got.Spec.Replicas != 3 || got.Spec.Paused {
					t.Errorf("replicas %d paused %v", *got.Spec.Replicas, got.Spec.Paused)
				}
			},
		},
		{
			name:   "a target scaled to zero still gets one canary replica",
			modify: func(d *appsv1.Deployment) { d.Spec.Replicas = ptr.To[int32](0) },
			check: func(t *testing.T, got *appsv1.Deployment) {
				if *got.Spec.Replicas != 1 {
					t.Errorf("replicas %d", *got.Spec.Replicas)
				}
			},
		},
		{
			name: "coalmine and kubectl metadata are dropped, the revision is recorded",
			check: func(t *testing.T, got *appsv1.Deployment) {
				for k := range got.Labels {
					if strings.HasPrefix(k, "coalmine.dev/") {
						t.Errorf("label %s kept", k)
					}
				}
				want := map[string]string{"owner": "team-a", v1beta1.AnnotationRevision: "rev2"}
				if !equality.Semantic.DeepEqual(got.Annotations, want) {
					t.Errorf("annotations = %v, want %v", got.Annotations, want)
				}
				if got.Labels["app"] != "alice-canary" || got.Labels["team"] != "a" {
					t.Errorf("labels = %v", got.Labels)
				}
			},
		},
		{
			name: "pod anti-affinity and affinity about the app are rewritten, about other apps kept",
			modify: func(d *appsv1.Deployment) {
				d.Spec.Template.Spec.Affinity = &corev1.Affinity{
					PodAntiAffinity: &corev1.PodAntiAffinity{
						RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{
							{LabelSelector: appSel("alice"), TopologyKey: "kubernetes.io/hostname"},
						},
						PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{
							{Weight: 1, PodAffinityTerm: corev1.PodAffinityTerm{LabelSelector: &metav1.LabelSelector{
								MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"alice", "bob"}}},
							}, TopologyKey: "zone"}},
						},
					},
					PodAffinity: &corev1.PodAffinity{
						RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{
							{LabelSelector: appSel("redis"), TopologyKey: "zone"},
						},
					},
				}
			},
			check: func(t *testing.T, got *appsv1.Deployment) {
				a := got.Spec.Template.Spec.Affinity
				if v := a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution[0].LabelSelector.MatchLabels["app"]; v != "alice-canary" {
					t.Errorf("required anti-affinity app = %q", v)
				}
				vals := a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.LabelSelector.MatchExpressions[0].Values
				if vals[0] != "alice-canary" || vals[1] != "bob" {
					t.Errorf("preferred anti-affinity values = %v", vals)
				}
				if v := a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution[0].LabelSelector.MatchLabels["app"]; v != "redis" {
					t.Errorf("affinity to another app = %q, want untouched", v)
				}
			},
		},
		{
			name: "topology spread constraints about the app are rewritten",
			modify: func(d *appsv1.Deployment) {
				d.Spec.Template.Spec.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{
					{MaxSkew: 1, TopologyKey: "zone", WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: appSel("alice")},
				}
			},
			check: func(t *testing.T, got *appsv1.Deployment) {
				if v := got.Spec.Template.Spec.TopologySpreadConstraints[0].LabelSelector.MatchLabels["app"]; v != "alice-canary" {
					t.Errorf("spread selector app = %q", v)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := target()
			if tt.modify != nil {
				tt.modify(in)
			}
			before := in.DeepCopy()
			got, err := CanaryDeployment(in, "alice-canary", "rev2", nil)
			if err != nil {
				t.Fatal(err)
			}
			if !equality.Semantic.DeepEqual(in, before) {
				t.Error("the target was modified")
			}
			tt.check(t, got)
		})
	}
}

func TestCanaryDeploymentNeedsMatchLabels(t *testing.T) {
	in := target()
	in.Spec.Selector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpExists}}}
	if _, err := CanaryDeployment(in, "alice-canary", "r", nil); err == nil {
		t.Fatal("want an error for a selector without matchLabels")
	}
}

func TestUpdateCanaryDeployment(t *testing.T) {
	old, _ := CanaryDeployment(target(), "alice-canary", "rev1", nil)
	tests := []struct {
		name        string
		desired     func() *appsv1.Deployment
		wantChanged bool
	}{
		{"same revision and replicas is no change", func() *appsv1.Deployment { d, _ := CanaryDeployment(target(), "alice-canary", "rev1", nil); return d }, false},
		{"new revision takes the new template", func() *appsv1.Deployment {
			tg := target()
			tg.Spec.Template.Spec.Containers[0].Image = "alice:3"
			d, _ := CanaryDeployment(tg, "alice-canary", "rev2", nil)
			return d
		}, true},
		{"replicas follow the target", func() *appsv1.Deployment {
			tg := target()
			tg.Spec.Replicas = ptr.To[int32](5)
			d, _ := CanaryDeployment(tg, "alice-canary", "rev1", nil)
			return d
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			existing := old.DeepCopy()
			desired := tt.desired()
			if got := UpdateCanaryDeployment(existing, desired); got != tt.wantChanged {
				t.Fatalf("changed = %v, want %v", got, tt.wantChanged)
			}
			if !equality.Semantic.DeepEqual(existing.Spec, desired.Spec) {
				t.Errorf("spec after update differs:\n got %+v\nwant %+v", existing.Spec, desired.Spec)
			}
		})
	}
}

func TestDeploymentReadiness(t *testing.T) {
	dep := func(gen, observed int64, replicas int32, st appsv1.DeploymentStatus) *appsv1.Deployment {
		st.ObservedGeneration = observed
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "alice-canary", Generation: gen},
			Spec:       appsv1.DeploymentSpec{Replicas: ptr.To(replicas)},
			Status:     st,
		}
	}
	tests := []struct {
		name      string
		d         *appsv1.Deployment
		threshold int
		want      Readiness
		msg       string
	}{
		{"generation not observed", dep(2, 1, 3, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3}), 100, Readiness{}, "not observed"},
		{"replicas not updated yet", dep(1, 1, 3, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 1, AvailableReplicas: 3}), 100, Readiness{}, "1 of 3 replicas updated"},
		{"old replicas pending termination", dep(1, 1, 3, appsv1.DeploymentStatus{Replicas: 4, UpdatedReplicas: 3, AvailableReplicas: 3}), 100, Readiness{}, "1 old replicas"},
		{"not enough available", dep(1, 1, 3, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 2}), 100, Readiness{}, "2 of 3 updated replicas available"},
		{"enough available under a lower threshold", dep(1, 1, 3, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 2}), 50, Readiness{Ready: true}, "ready"},
		{"threshold rounds up", dep(1, 1, 3, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 1}), 50, Readiness{}, "available"},
		{"all ready", dep(1, 1, 3, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3}), 100, Readiness{Ready: true}, "ready"},
		{"scaled to zero is ready", dep(1, 1, 0, appsv1.DeploymentStatus{}), 100, Readiness{Ready: true}, "ready"},
		{"progress deadline exceeded fails", dep(1, 1, 3, appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3, Conditions: []appsv1.DeploymentCondition{
			{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse, Reason: "ProgressDeadlineExceeded", Message: "ReplicaSet has timed out"},
		}}), 100, Readiness{Failed: true}, "progress deadline"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := DeploymentReadiness(tt.d, tt.threshold)
			if got.Ready != tt.want.Ready || got.Failed != tt.want.Failed {
				t.Errorf("got %+v, want ready=%v failed=%v", got, tt.want.Ready, tt.want.Failed)
			}
			if !strings.Contains(got.Message, tt.msg) {
				t.Errorf("message %q does not contain %q", got.Message, tt.msg)
			}
		})
	}
}

func seedCanary() *v1beta1.Canary {
	proto := &v1beta1.CustomMetadata{Annotations: map[string]string{"8080.service.kuma.io/protocol": "http"}}
	return &v1beta1.Canary{
		ObjectMeta: metav1.ObjectMeta{Name: "alice", Namespace: "apps-a-mesh-a"},
		Spec: v1beta1.CanarySpec{
			TargetRef: v1beta1.LocalObjectReference{Name: "alice"},
			Service: v1beta1.CanaryService{
				Name: "alice", Port: 8080, TargetPort: intstr.FromString("http"), PortName: "http",
				Apex: proto, Primary: proto, Canary: proto,
			},
		},
	}
}

func TestServices(t *testing.T) {
	app := map[string]string{"app": "alice"}
	tests := []struct {
		name   string
		canary func() *v1beta1.Canary
		check  func(t *testing.T, s ServiceSet)
	}{
		{
			name:   "seed canary: names, selectors, port and protocol annotation",
			canary: seedCanary,
			check: func(t *testing.T, s ServiceSet) {
				wantNames := []string{"alice", "alice-primary", "alice-canary"}
				wantApp := []string{"alice", "alice", "alice-canary"}
				for i, svc := range s.All() {
					if svc.Name != wantNames[i] || svc.Namespace != "apps-a-mesh-a" {
						t.Errorf("service %d = %s/%s", i, svc.Namespace, svc.Name)
					}
					if svc.Spec.Selector["app"] != wantApp[i] {
						t.Errorf("%s selector = %v", svc.Name, svc.Spec.Selector)
					}
					p := svc.Spec.Ports[0]
					if p.Port != 8080 || p.TargetPort != intstr.FromString("http") || p.Name != "http" {
						t.Errorf("%s port = %+v", svc.Name, p)
					}
					if svc.Annotations["8080.service.kuma.io/protocol"] != "http" {
						t.Errorf("%s annotations = %v", svc.Name, svc.Annotations)
					}
				}
			},
		},
		{
			name: "targetPort defaults to port and portName to http",
			canary: func() *v1beta1.Canary {
				c := seedCanary()
				c.Spec.Service = v1beta1.CanaryService{Port: 9090}
				return c
			},
			check: func(t *testing.T, s ServiceSet) {
				p := s.Apex.Spec.Ports[0]
				if p.TargetPort != intstr.FromInt32(9090) || p.Name != "http" {
					t.Errorf("port = %+v", p)
				}
				if s.Apex.Name != "alice" {
					t.Errorf("apex name %q, want the target's name", s.Apex.Name)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.check(t, Services(tt.canary(), app)) })
	}
}

func TestUpdateService(t *testing.T) {
	desired := Services(seedCanary(), map[string]string{"app": "alice"}).Apex
	tests := []struct {
		name        string
		existing    *corev1.Service
		wantChanged bool
		check       func(t *testing.T, s *corev1.Service)
	}{
		{"identical is no change", desired.DeepCopy(), false, nil},
		{
			name: "adopted apex: selector and ports rewritten, foreign metadata and node port kept",
			existing: &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: "alice", Annotations: map[string]string{"keep": "me"}},
				Spec: corev1.ServiceSpec{
					Type:     corev1.ServiceTypeNodePort,
					Selector: map[string]string{"app": "alice", "tier": "web"},
					Ports:    []corev1.ServicePort{{Name: "web", Port: 8080, NodePort: 30080, TargetPort: intstr.FromInt32(80)}},
				},
			},
			wantChanged: true,
			check: func(t *testing.T, s *corev1.Service) {
				if len(s.Spec.Selector) != 1 || s.Spec.Selector["app"] != "alice" {
					t.Errorf("selector = %v", s.Spec.Selector)
				}
				if p := s.Spec.Ports[0]; p.NodePort != 30080 || p.Name != "http" || p.TargetPort != intstr.FromString("http") {
					t.Errorf("port = %+v", p)
				}
				if s.Spec.Type != corev1.ServiceTypeNodePort || s.Annotations["keep"] != "me" || s.Annotations["8080.service.kuma.io/protocol"] != "http" {
					t.Errorf("type %s annotations %v", s.Spec.Type, s.Annotations)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := UpdateService(tt.existing, desired); got != tt.wantChanged {
				t.Fatalf("changed = %v, want %v", got, tt.wantChanged)
			}
			if tt.check != nil {
				tt.check(t, tt.existing)
			}
			if UpdateService(tt.existing, desired) {
				t.Error("a second update still changes the Service")
			}
		})
	}
}

func TestSelectsAll(t *testing.T) {
	pods := map[string]string{"app": "alice", "version": "v2"}
	tests := []struct {
		name     string
		selector map[string]string
		want     bool
	}{
		{"same app", map[string]string{"app": "alice"}, true},
		{"subset of labels", map[string]string{"app": "alice", "version": "v2"}, true},
		{"other value", map[string]string{"app": "alice-canary"}, false},
		{"extra key", map[string]string{"app": "alice", "tier": "web"}, false},
		{"no selector selects nothing", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := SelectsAll(tt.selector, pods); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
