package app

import (
	"fmt"
	"reflect"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

func sameMap(a, b map[string]string) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

func protocol() map[string]string { return map[string]string{"8080.service.kuma.io/protocol": "http"} }

func TestCacheTransformSharesEqualSmallMaps(t *testing.T) {
	transform := newCacheTransform()
	apply := func(obj any) any {
		t.Helper()
		out, err := transform(obj)
		if err != nil {
			t.Fatalf("transform: %v", err)
		}
		return out
	}

	c := apply(&v1beta1.Canary{Spec: v1beta1.CanarySpec{Service: v1beta1.CanaryService{
		Apex: &v1beta1.CustomMetadata{Annotations: protocol()}, Primary: &v1beta1.CustomMetadata{Annotations: protocol()},
		Canary: &v1beta1.CustomMetadata{Annotations: protocol(), Labels: map[string]string{"tier": "web"}},
	}}}).(*v1beta1.Canary)
	svc := apply(&corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "podinfo", Annotations: protocol(), Labels: map[string]string{"app": "podinfo"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "podinfo"}},
	}).(*corev1.Service)
	d := apply(&appsv1.Deployment{Spec: appsv1.DeploymentSpec{
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "podinfo"}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "podinfo"}}},
	}}).(*appsv1.Deployment)

	for _, tc := range []struct {
		name string
		a, b map[string]string
	}{
		{"a Canary's apex and primary Service metadata", c.Spec.Service.Apex.Annotations, c.Spec.Service.Primary.Annotations},
		{"a Canary's Service metadata and a Service's annotations", c.Spec.Service.Canary.Annotations, svc.Annotations},
		{"a Service's labels and its selector", svc.Labels, svc.Spec.Selector},
		{"a Deployment's selector and its pod labels", d.Spec.Selector.MatchLabels, d.Spec.Template.Labels},
		{"a Deployment's pod labels and a Service's selector", d.Spec.Template.Labels, svc.Spec.Selector},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !sameMap(tc.a, tc.b) {
				t.Errorf("%v and %v are two maps, want one shared", tc.a, tc.b)
			}
		})
	}
	if sameMap(c.Spec.Service.Canary.Labels, svc.Labels) {
		t.Errorf("maps of different content are shared: %v, %v", c.Spec.Service.Canary.Labels, svc.Labels)
	}
	if svc.ManagedFields != nil {
		t.Errorf("managedFields kept: %v", svc.ManagedFields)
	}
	if got := svc.Annotations["8080.service.kuma.io/protocol"]; got != "http" || len(svc.Annotations) != 1 {
		t.Errorf("annotations changed: %v", svc.Annotations)
	}
}

func TestContentKeyTellsContentsApart(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b map[string]string
	}{
		{"a value's start moved into the key", map[string]string{"ab": "c"}, map[string]string{"a": "bc"}},
		{"one entry or two", map[string]string{"a": "1:b1:2"}, map[string]string{"a": "", "b": "2"}},
		{"a value differs", map[string]string{"app": "podinfo"}, map[string]string{"app": "podinfo-canary"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ka, _ := contentKey(tc.a)
			kb, _ := contentKey(tc.b)
			if ka == kb {
				t.Errorf("%v and %v have one key %q", tc.a, tc.b, ka)
			}
		})
	}
}

func TestMapPoolLeavesAloneWhatItDoesNotShare(t *testing.T) {
	big := map[string]string{}
	for i := range sharedMapMaxEntries + 1 {
		big[fmt.Sprint("k", i)] = "v"
	}
	long := map[string]string{"kubectl.kubernetes.io/last-applied-configuration": string(make([]byte, sharedMapMaxBytes))}
	for _, tc := range []struct {
		name string
		m    map[string]string
	}{
		{"nil", nil},
		{"empty", map[string]string{}},
		{"more entries than a map group holds", big},
		{"a long annotation", long},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &mapPool{maps: map[string]map[string]string{}}
			if got := p.share(tc.m); !sameMap(got, tc.m) || len(p.maps) != 0 {
				t.Errorf("share(%d entries) pooled it or returned another map (pool %d)", len(tc.m), len(p.maps))
			}
		})
	}

	t.Run("a full pool starts afresh", func(t *testing.T) {
		p := &mapPool{maps: map[string]map[string]string{}}
		for i := range sharedMapsMax {
			p.share(map[string]string{"app": fmt.Sprint("app-", i)})
		}
		m := map[string]string{"app": "one-more"}
		if got := p.share(m); !sameMap(got, m) || len(p.maps) != 1 {
			t.Errorf("pool of %d after one more, want 1 (the new map)", len(p.maps))
		}
		again := map[string]string{"app": "one-more"}
		if !sameMap(p.share(again), m) {
			t.Error("the map pooled after the reset is not shared")
		}
	})
}
