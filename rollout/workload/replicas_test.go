package workload

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// TestCanaryReplicas: spec.canaryReplicas (coalmine extension) sets the canary
// Deployment's replicas, as a number or a percentage of the target's (rounded up), at
// least 1; unset, or unusable, the canary gets the target's. An update follows the
// target's replicas (an HPA scaling it) for a percentage.
func TestCanaryReplicas(t *testing.T) {
	pct := func(s string) *intstr.IntOrString { v := intstr.FromString(s); return &v }
	num := func(n int32) *intstr.IntOrString { v := intstr.FromInt32(n); return &v }
	tests := []struct {
		name   string
		target *int32
		value  *intstr.IntOrString
		want   int32
	}{
		{"unset: the target's", ptr.To[int32](10), nil, 10},
		{"a number", ptr.To[int32](10), num(2), 2},
		{"more than the target is allowed", ptr.To[int32](2), num(4), 4},
		{"a percentage, rounded up", ptr.To[int32](10), pct("25%"), 3},
		{"100%", ptr.To[int32](7), pct("100%"), 7},
		{"a small percentage is still one pod", ptr.To[int32](3), pct("1%"), 1},
		{"a target scaled to zero still gets one", ptr.To[int32](0), pct("50%"), 1},
		{"unset replicas of the target mean 1", nil, pct("50%"), 1},
		{"zero falls back to the target's", ptr.To[int32](4), num(0), 4},
		{"garbage falls back to the target's", ptr.To[int32](4), pct("half"), 4},
		{"above 100% falls back to the target's", ptr.To[int32](4), pct("150%"), 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := target()
			tg.Spec.Replicas = tt.target
			d, err := CanaryDeployment(tg, "alice-canary", "rev2", tt.value)
			if err != nil {
				t.Fatal(err)
			}
			if got := *d.Spec.Replicas; got != tt.want {
				t.Errorf("replicas %d, want %d", got, tt.want)
			}
		})
	}

	t.Run("a percentage follows the target's replicas", func(t *testing.T) {
		existing, _ := CanaryDeployment(target(), "alice-canary", "rev2", pct("50%"))
		tg := target()
		tg.Spec.Replicas = ptr.To[int32](8) // the HPA scaled the target up
		desired, _ := CanaryDeployment(tg, "alice-canary", "rev2", pct("50%"))
		if !UpdateCanaryDeployment(existing, desired) || *existing.Spec.Replicas != 4 {
			t.Errorf("replicas %d after the target went to 8, want 4", *existing.Spec.Replicas)
		}
	})

	t.Run("the webhook's rule", func(t *testing.T) {
		for _, bad := range []*intstr.IntOrString{num(0), num(-1), pct("0%"), pct("101%"), pct("25"), pct("25 %"), pct("x")} {
			if _, err := v1beta1.CanaryReplicasOf(bad, 10); err == nil {
				t.Errorf("%s accepted", bad.String())
			}
		}
	})
}

// TestServicesFlaggerFields: portDiscovery adds the other TCP container ports (Flagger's
// names), trafficDistribution is set, unmanagedMetadata keys are never set.
func TestServicesFlaggerFields(t *testing.T) {
	c := seedCanary()
	c.Spec.Service.PortDiscovery = true
	c.Spec.Service.TrafficDistribution = "PreferClose"
	c.Spec.Service.Apex.Labels = map[string]string{"team": "a", "owned-by-argo": "x"}
	c.Spec.Service.UnmanagedMetadata = &v1beta1.UnmanagedMetadata{Labels: []string{"owned-by-argo"}, Annotations: []string{"8080.service.kuma.io/protocol"}}
	pod := &corev1.PodSpec{Containers: []corev1.Container{
		{Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "metrics", ContainerPort: 9090}, {ContainerPort: 7070}}},
		{Name: "side", Ports: []corev1.ContainerPort{{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}, {ContainerPort: 9090}}},
	}}
	s := ServicesFor(c, map[string]string{"app": "alice"}, pod)
	for _, svc := range s.All() {
		var got []string
		for _, p := range svc.Spec.Ports {
			got = append(got, p.Name+":"+p.TargetPort.String())
		}
		want := []string{"http:http", "metrics:9090", "tcp-app-2:7070"}
		if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
			t.Errorf("%s ports %v, want %v", svc.Name, got, want)
		}
		if svc.Spec.TrafficDistribution == nil || *svc.Spec.TrafficDistribution != "PreferClose" {
			t.Errorf("%s trafficDistribution %v", svc.Name, svc.Spec.TrafficDistribution)
		}
		if _, set := svc.Annotations["8080.service.kuma.io/protocol"]; set {
			t.Errorf("%s sets an unmanaged annotation: %v", svc.Name, svc.Annotations)
		}
	}
	if l := s.Apex.Labels; l["team"] != "a" || l["owned-by-argo"] != "" {
		t.Errorf("apex labels %v", l)
	}
	// Without portDiscovery only spec.service's port.
	c.Spec.Service.PortDiscovery = false
	if ports := ServicesFor(c, map[string]string{"app": "alice"}, pod).Apex.Spec.Ports; len(ports) != 1 {
		t.Errorf("ports %v without portDiscovery", ports)
	}
}
