package sandbox

import (
	"context"
	"crypto/tls"
	"fmt"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The fake node kwok manages. Pods of tests must tolerate its taint; FakeNodeSelector
// pins them to it.
const (
	FakeNodeName = "kwok-node-0"
	// fakeNodeKey is kwok's own annotation and taint key for nodes it fakes.
	fakeNodeKey = "kwok.x-k8s.io/node"
)

var (
	// FakeNodeToleration tolerates the fake node's taint. Every pod a test creates needs it.
	FakeNodeToleration = corev1.Toleration{
		Key:      fakeNodeKey,
		Operator: corev1.TolerationOpEqual,
		Value:    "fake",
		Effect:   corev1.TaintEffectNoSchedule,
	}
	// FakeNodeSelector selects the fake node (kwok's usual "type: kwok" label).
	FakeNodeSelector = map[string]string{"type": "kwok"}
)

// SchedulableOnFakeNode adds FakeNodeToleration and FakeNodeSelector to spec, once.
func SchedulableOnFakeNode(spec *corev1.PodSpec) {
	if !slices.Contains(spec.Tolerations, FakeNodeToleration) {
		spec.Tolerations = append(spec.Tolerations, FakeNodeToleration)
	}
	if spec.NodeSelector == nil {
		spec.NodeSelector = map[string]string{}
	}
	maps.Copy(spec.NodeSelector, FakeNodeSelector)
}

// startNodes starts the controller-manager, the scheduler and kwok against the admin
// kubeconfig, registers the fake node and waits until it is Ready and new namespaces
// get their default ServiceAccount.
func (s *Sandbox) startNodes(ctx context.Context) error {
	certDir := s.env.ControlPlane.APIServer.CertDir
	kcmPort, err := freePort()
	if err != nil {
		return err
	}
	kcm, err := startProcess("kube-controller-manager", s.Dir, s.Binaries.KubeControllerManager,
		"--kubeconfig="+s.KubeconfigPath,
		"--authentication-kubeconfig="+s.KubeconfigPath,
		"--authorization-kubeconfig="+s.KubeconfigPath,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(kcmPort),
		"--cert-dir="+filepath.Join(s.Dir, "kube-controller-manager"),
		"--leader-elect=false",
		"--cluster-name=coalmine-sandbox",
		// The ServiceAccount controllers create "default" in every namespace and sign
		// legacy tokens with the key envtest made for the apiserver.
		"--service-account-private-key-file="+filepath.Join(certDir, "sa-signer.key"),
		"--root-ca-file="+filepath.Join(s.Dir, "ca.crt"),
		"--use-service-account-credentials=false",
		// Tests and benchmarks churn Deployments; the default 20 QPS would throttle them.
		"--kube-api-qps=200",
		"--kube-api-burst=400",
		"--concurrent-deployment-syncs=10",
		"--concurrent-replicaset-syncs=10",
	)
	if err != nil {
		return err
	}
	s.children = append(s.children, kcm)

	schedPort, err := freePort()
	if err != nil {
		return err
	}
	sched, err := startProcess("kube-scheduler", s.Dir, s.Binaries.KubeScheduler,
		"--kubeconfig="+s.KubeconfigPath,
		"--authentication-kubeconfig="+s.KubeconfigPath,
		"--authorization-kubeconfig="+s.KubeconfigPath,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(schedPort),
		"--cert-dir="+filepath.Join(s.Dir, "kube-scheduler"),
		"--leader-elect=false",
	)
	if err != nil {
		return err
	}
	s.children = append(s.children, sched)

	stages, err := kwokStageFiles(ctx)
	if err != nil {
		return err
	}
	kwok, err := startProcess("kwok", s.Dir, s.Binaries.Kwok,
		"--kubeconfig="+s.KubeconfigPath,
		"--config="+strings.Join(stages, ","),
		"--manage-nodes-with-annotation-selector="+fakeNodeKey+"=fake",
		// A /16 of pod IPs: benchmarks run many canaries.
		"--cidr=10.244.0.1/16",
		"--node-ip=10.240.0.1",
		// The heartbeat-with-lease stage only renews a Lease when leases are on; without
		// one the node-lifecycle controller marks the node NotReady after ~50 s and every
		// pod with it, which stalls any scenario longer than that.
		"--node-lease-duration-seconds=40",
	)
	if err != nil {
		return err
	}
	s.children = append(s.children, kwok)

	if err := s.createFakeNode(ctx); err != nil {
		return err
	}
	for _, h := range []struct {
		p    *process
		port int
	}{{kcm, kcmPort}, {sched, schedPort}} {
		if err := waitHealthy(ctx, h.p, h.port); err != nil {
			return err
		}
	}
	if err := Poll(ctx, 60*time.Second, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		if done, err := kwok.exited(); done {
			return false, err
		}
		node := &corev1.Node{}
		if err := s.client.Get(ctx, client.ObjectKey{Name: FakeNodeName}, node); err != nil {
			return false, err
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, fmt.Errorf("node %s is not Ready (kwok log: %s)", FakeNodeName, kwok.logPath)
	}); err != nil {
		return fmt.Errorf("wait for the fake node: %w", err)
	}
	// The ServiceAccount controller proves the controller-manager works end to end.
	if err := Poll(ctx, 60*time.Second, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		if done, err := kcm.exited(); done {
			return false, err
		}
		err := s.client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "default"}, &corev1.ServiceAccount{})
		return err == nil, err
	}); err != nil {
		return fmt.Errorf("wait for the default ServiceAccount (log: %s): %w", kcm.logPath, err)
	}
	return nil
}

func (s *Sandbox) createFakeNode(ctx context.Context) error {
	labels := map[string]string{
		"kubernetes.io/hostname":        FakeNodeName,
		"kubernetes.io/os":              "linux",
		"kubernetes.io/arch":            "amd64",
		"kubernetes.io/role":            "agent",
		"node-role.kubernetes.io/agent": "",
	}
	for k, v := range FakeNodeSelector {
		labels[k] = v
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        FakeNodeName,
			Labels:      labels,
			Annotations: map[string]string{fakeNodeKey: "fake", "node.alpha.kubernetes.io/ttl": "0"},
		},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: fakeNodeKey, Value: "fake", Effect: corev1.TaintEffectNoSchedule}}},
	}
	// A sandbox restarted on its old Dir finds the node in etcd already.
	if err := s.client.Create(ctx, node); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create fake node: %w", err)
	}
	return nil
}

// waitHealthy polls https://127.0.0.1:<port>/healthz of a component serving a
// self-signed certificate, failing at once if the process exits.
func waitHealthy(ctx context.Context, p *process, port int) error {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // loopback health check of a self-signed server
	}}
	defer hc.CloseIdleConnections()
	url := fmt.Sprintf("https://127.0.0.1:%d/healthz", port)
	err := Poll(ctx, 60*time.Second, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		if done, err := p.exited(); done {
			return false, err
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := hc.Do(req)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("%s: %s", url, resp.Status)
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("wait for %s (log: %s): %w", p.name, p.logPath, err)
	}
	return nil
}
