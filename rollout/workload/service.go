package workload

import (
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// ServiceSet is the three Services of a Canary.
type ServiceSet struct {
	// Apex is the name clients call; it selects the target's pods, and the route splits its
	// traffic between Primary and Canary.
	Apex *corev1.Service
	// Primary selects the target's pods: the stable revision.
	Primary *corev1.Service
	// Canary selects the canary Deployment's pods.
	Canary *corev1.Service
}

// All returns the Services in the order apex, primary, canary.
func (s ServiceSet) All() []*corev1.Service { return []*corev1.Service{s.Apex, s.Primary, s.Canary} }

// Services returns the desired Services of c for a target whose pods carry app (the target's
// selector matchLabels): one port from spec.service (targetPort defaults to port, name to
// http), each Service with its spec.service.{apex,primary,canary} labels and annotations.
// The caller sets owner references.
func Services(c *v1beta1.Canary, app map[string]string) ServiceSet {
	return ServicesFor(c, app, nil)
}

// ServicesFor is Services for a target running pod: with spec.service.portDiscovery, every
// other container port of pod is added to the three Services (Flagger's portDiscovery);
// spec.service.trafficDistribution is set on them, and the keys of
// spec.service.unmanagedMetadata are never set.
func ServicesFor(c *v1beta1.Canary, app map[string]string, pod *corev1.PodSpec) ServiceSet {
	port := corev1.ServicePort{
		Name:       c.PortName(),
		Protocol:   corev1.ProtocolTCP,
		Port:       c.Spec.Service.Port,
		TargetPort: c.Spec.Service.TargetPort,
	}
	if port.TargetPort == (intstr.IntOrString{}) {
		port.TargetPort = intstr.FromInt32(c.Spec.Service.Port)
	}
	if ap := c.Spec.Service.AppProtocol; ap != "" {
		port.AppProtocol = &ap
	}
	ports := []corev1.ServicePort{port}
	if c.Spec.Service.PortDiscovery && pod != nil {
		ports = append(ports, discoveredPorts(c, port, pod)...)
	}
	var td *string
	if v := c.Spec.Service.TrafficDistribution; v != "" {
		td = &v
	}
	svc := func(name string, meta *v1beta1.CustomMetadata, selector map[string]string) *corev1.Service {
		s := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: c.Namespace},
			Spec: corev1.ServiceSpec{
				Type:                corev1.ServiceTypeClusterIP,
				Selector:            maps.Clone(selector),
				TrafficDistribution: td,
			},
		}
		for _, p := range ports {
			s.Spec.Ports = append(s.Spec.Ports, *p.DeepCopy())
		}
		if meta != nil {
			s.Labels = maps.Clone(meta.Labels)
			s.Annotations = maps.Clone(meta.Annotations)
		}
		if um := c.Spec.Service.UnmanagedMetadata; um != nil {
			for _, k := range um.Labels {
				delete(s.Labels, k)
			}
			for _, k := range um.Annotations {
				delete(s.Annotations, k)
			}
		}
		return s
	}
	return ServiceSet{
		Apex:    svc(c.ApexName(), c.Spec.Service.Apex, app),
		Primary: svc(c.PrimaryName(), c.Spec.Service.Primary, app),
		Canary:  svc(c.CanaryName(), c.Spec.Service.Canary, SuffixLabels(app, app, v1beta1.CanarySuffix)),
	}
}

// discoveredPorts are the container ports of pod other than main's target port, named as
// Flagger names them (the port's name, else tcp-<container>-<index>), in container order.
// A port whose name or number the Services already carry is skipped.
func discoveredPorts(c *v1beta1.Canary, main corev1.ServicePort, pod *corev1.PodSpec) []corev1.ServicePort {
	names := map[string]bool{main.Name: true}
	numbers := map[int32]bool{main.Port: true}
	var out []corev1.ServicePort
	for _, ctr := range pod.Containers {
		for i, p := range ctr.Ports {
			tp := main.TargetPort
			if tp.Type == intstr.String && p.Name == tp.StrVal || tp.Type == intstr.Int && p.ContainerPort == tp.IntVal {
				continue
			}
			if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
				continue
			}
			name := p.Name
			if name == "" {
				name = fmt.Sprintf("tcp-%s-%d", ctr.Name, i)
			}
			if names[name] || numbers[p.ContainerPort] {
				continue
			}
			names[name], numbers[p.ContainerPort] = true, true
			out = append(out, corev1.ServicePort{
				Name: name, Protocol: corev1.ProtocolTCP, Port: p.ContainerPort, TargetPort: intstr.FromInt32(p.ContainerPort),
			})
		}
	}
	return out
}

// UpdateService brings the fields coalmine owns in existing to desired and reports whether
// anything changed. Coalmine owns the selector, the port list and its own labels and
// annotations; it keeps labels and annotations others added, the Service type, cluster IPs
// and the node port of a matching port, so adopting a pre-existing NodePort apex keeps
// working for its clients.
func UpdateService(existing, desired *corev1.Service) bool {
	changed := false
	if !maps.Equal(existing.Spec.Selector, desired.Spec.Selector) {
		existing.Spec.Selector = maps.Clone(desired.Spec.Selector)
		changed = true
	}
	ports := make([]corev1.ServicePort, len(desired.Spec.Ports))
	for i, p := range desired.Spec.Ports {
		ports[i] = *p.DeepCopy()
		for _, old := range existing.Spec.Ports {
			if old.Port == p.Port {
				ports[i].NodePort = old.NodePort
			}
		}
	}
	if !portsEqual(existing.Spec.Ports, ports) {
		existing.Spec.Ports = ports
		changed = true
	}
	if td := desired.Spec.TrafficDistribution; td != nil && (existing.Spec.TrafficDistribution == nil || *existing.Spec.TrafficDistribution != *td) {
		v := *td
		existing.Spec.TrafficDistribution = &v
		changed = true
	}
	if mergeInto(&existing.Labels, desired.Labels) {
		changed = true
	}
	if mergeInto(&existing.Annotations, desired.Annotations) {
		changed = true
	}
	return changed
}

func portsEqual(a, b []corev1.ServicePort) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Name != y.Name || x.Port != y.Port || x.TargetPort != y.TargetPort || x.NodePort != y.NodePort {
			return false
		}
		if px, py := orTCP(x.Protocol), orTCP(y.Protocol); px != py {
			return false
		}
		if (x.AppProtocol == nil) != (y.AppProtocol == nil) || (x.AppProtocol != nil && *x.AppProtocol != *y.AppProtocol) {
			return false
		}
	}
	return true
}

func orTCP(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}

// mergeInto sets every key of src in *dst and reports whether *dst changed.
func mergeInto(dst *map[string]string, src map[string]string) bool {
	changed := false
	for k, v := range src {
		if cur, ok := (*dst)[k]; ok && cur == v {
			continue
		}
		if *dst == nil {
			*dst = map[string]string{}
		}
		(*dst)[k] = v
		changed = true
	}
	return changed
}
