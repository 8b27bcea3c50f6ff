package demo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	"github.com/coalmine-dev/coalmine/cmd/coalmine/app"
	"github.com/coalmine-dev/coalmine/manifests"
	"github.com/coalmine-dev/coalmine/sandbox"
	"github.com/coalmine-dev/coalmine/webhook"
)

// Coalmine's identity on the sandbox: the ServiceAccount the shipped manifests create.
const (
	Namespace      = "coalmine-system"
	ServiceAccount = "coalmine"
	Username       = "system:serviceaccount:" + Namespace + ":" + ServiceAccount
)

// serviceAccountGroups are the groups of coalmine's ServiceAccount.
var serviceAccountGroups = []string{"system:serviceaccounts", "system:serviceaccounts:" + Namespace, "system:authenticated"}

// Instance is coalmine running in this process against a sandbox.
type Instance struct {
	Options app.Options
	cancel  context.CancelFunc
	done    chan error

	stopOnce sync.Once
	stopErr  error
}

// Install puts what the shipped manifests would create into the sandbox: the namespace,
// ServiceAccount, RBAC and webhook configurations (the sandbox overlay: a loopback URL
// instead of the in-cluster Service; rules, selectors and policies unchanged).
func Install(ctx context.Context, sb *sandbox.Sandbox, webhookPort int) error {
	c, err := client.New(sb.Config, client.Options{Scheme: app.NewScheme()})
	if err != nil {
		return fmt.Errorf("create sandbox client: %w", err)
	}
	objs, err := identity()
	if err != nil {
		return err
	}
	hooks, err := webhook.SandboxConfigurations(manifests.WebhookConfigurations, "https://127.0.0.1:"+strconv.Itoa(webhookPort), nil)
	if err != nil {
		return fmt.Errorf("render sandbox webhook configurations: %w", err)
	}
	return applyAll(ctx, c, append(objs, hooks...))
}

// InstallMeshRBAC gives coalmine's ServiceAccount the shipped RBAC on the mesh's
// control-plane cluster (multi-zone: the Global CP), where it only writes TrafficRoutes:
// the identity its --mesh-kubeconfig carries.
func InstallMeshRBAC(ctx context.Context, c client.Client) error {
	objs, err := identity()
	if err != nil {
		return err
	}
	if err := applyAll(ctx, c, objs); err != nil {
		return fmt.Errorf("install coalmine's RBAC on the mesh control plane: %w", err)
	}
	return nil
}

// identity is coalmine's namespace and the shipped ServiceAccount and RBAC.
func identity() ([]client.Object, error) {
	objs := []client.Object{&corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: Namespace},
	}}
	for _, data := range [][]byte{manifests.RBAC, manifests.RBACBindings} {
		rbacObjs, err := decodeAll(data)
		if err != nil {
			return nil, fmt.Errorf("decode shipped RBAC: %w", err)
		}
		objs = append(objs, rbacObjs...)
	}
	return objs, nil
}

func applyAll(ctx context.Context, c client.Client, objs []client.Object) error {
	for _, o := range objs {
		if err := apply(ctx, c, o); err != nil {
			return err
		}
	}
	return nil
}

// StartCoalmine runs coalmine in this process under its ServiceAccount identity
// (impersonation), and waits until it is ready: certificate served and injected, and its
// /metrics and web view answering when they are on.
//
// Its loopback ports (health probes, and /metrics and the web view when mutate sets them
// to 127.0.0.1:<port>) are picked free and bound a moment later; in between, another
// process of a parallel test run can take one (an outgoing connection's local port is
// drawn from the same range). A start that fails on "address already in use" is tried
// again, up to three times, with fresh ports; Instance.Options says which were used.
// The webhook port is the caller's: the webhook configurations name it.
func StartCoalmine(ctx context.Context, sb *sandbox.Sandbox, webhookPort int, mutate func(*app.Options)) (*Instance, error) {
	const attempts = 3
	for i := 1; ; i++ {
		in, err := startCoalmine(ctx, sb, webhookPort, mutate, i > 1)
		if err == nil || i == attempts || !errors.Is(err, syscall.EADDRINUSE) {
			return in, err
		}
		log.FromContext(ctx).Info("coalmine's port was taken between picking and binding it; starting again on fresh ports", "attempt", i, "error", err.Error())
	}
}

func startCoalmine(ctx context.Context, sb *sandbox.Sandbox, webhookPort int, mutate func(*app.Options), repick bool) (*Instance, error) {
	healthPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	certDir := filepath.Join(sb.Dir, "coalmine-certs")
	o := app.Options{
		RESTConfig:             sb.Impersonate(Username, serviceAccountGroups...),
		MetricsBindAddress:     "0",
		HealthProbeBindAddress: "127.0.0.1:" + strconv.Itoa(healthPort),
		LeaderElect:            true,
		LeaderElectionID:       "coalmine.coalmine.dev",
		WebhookHost:            "127.0.0.1",
		WebhookPort:            webhookPort,
		CertDir:                certDir,
		CertMode:               app.CertModeSelfManaged,
		CertIPs:                []string{"127.0.0.1"},
		Namespace:              Namespace,
		MetricsServer:          sb.PrometheusURL, // main only, as the seed: zone series arrive by remote write
		RouteKind:              "TrafficRoute",
		KubeAPIQPS:             200,
		KubeAPIBurst:           400,
		SyncPeriod:             time.Hour,
	}
	if mutate != nil {
		mutate(&o)
	}
	if repick {
		for _, addr := range []*string{&o.MetricsBindAddress, &o.WebAddress} {
			if strings.HasPrefix(*addr, "127.0.0.1:") && *addr != "127.0.0.1:0" {
				p, err := FreePort()
				if err != nil {
					return nil, err
				}
				*addr = "127.0.0.1:" + strconv.Itoa(p)
			}
		}
	}
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("coalmine options: %w", err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	in := &Instance{Options: o, cancel: cancel, done: make(chan error, 1)}
	go func() { in.done <- app.Run(runCtx, o) }()

	probes := []string{"http://" + o.HealthProbeBindAddress + "/readyz"}
	if o.MetricsBindAddress != "0" && o.MetricsBindAddress != "" {
		probes = append(probes, "http://"+o.MetricsBindAddress+"/metrics")
	}
	if o.WebAddress != "" {
		probes = append(probes, "http://"+o.WebAddress+"/")
	}
	var stopped error
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		select {
		case stopped = <-in.done:
			return false, fmt.Errorf("coalmine stopped while starting: %w", stopped)
		default:
		}
		for _, u := range probes {
			resp, err := http.Get(u)
			if err != nil {
				return false, nil
			}
			resp.Body.Close()
			if u == probes[0] && resp.StatusCode != http.StatusOK {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		if stopped == nil {
			in.Stop()
		}
		return nil, fmt.Errorf("wait for coalmine to be ready: %w", err)
	}
	log.FromContext(ctx).Info("coalmine ready", "webhook", o.WebhookPort)
	return in, nil
}

// Stop cancels coalmine and waits for it to return. Stopping again returns at once with
// the first call's result (a second wait on the run's result would wait for nothing).
func (in *Instance) Stop() error {
	in.stopOnce.Do(func() {
		in.cancel()
		select {
		case err := <-in.done:
			if !errors.Is(err, context.Canceled) {
				in.stopErr = err
			}
		case <-time.After(30 * time.Second):
			in.stopErr = errors.New("coalmine did not stop within 30s")
		}
	})
	return in.stopErr
}

// FreePort asks the kernel for an unused loopback port.
func FreePort() (int, error) {
	p, err := FreePorts(1)
	if err != nil {
		return 0, err
	}
	return p[0], nil
}

// FreePorts picks n distinct free loopback ports. Each listener stays open until all are
// picked: FreePort called n times in a row can answer the same port twice, since the
// kernel may hand a port just closed to the next request.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func decodeAll(data []byte) ([]client.Object, error) {
	var out []client.Object
	for _, doc := range splitYAML(data) {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			return nil, err
		}
		if len(u.Object) == 0 {
			continue
		}
		out = append(out, u)
	}
	return out, nil
}

// apply server-side applies what the shipped manifests would install.
func apply(ctx context.Context, c client.Client, o client.Object) error {
	return applyAs(ctx, c, o, "coalmine-install")
}

// applyAs server-side applies o with a field manager, as kubectl apply --server-side and
// Flux do, forcing ownership of the fields it sets.
func applyAs(ctx context.Context, c client.Client, o client.Object, manager string) error {
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			return fmt.Errorf("convert %s: %w", o.GetName(), err)
		}
		u = &unstructured.Unstructured{Object: m}
		gvk, err := apiutil.GVKForObject(o, c.Scheme())
		if err != nil {
			return fmt.Errorf("find kind of %s: %w", o.GetName(), err)
		}
		u.SetGroupVersionKind(gvk)
	}
	u.SetManagedFields(nil)
	u.SetResourceVersion("")
	if err := c.Patch(ctx, u, client.Apply, client.FieldOwner(manager), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply %s %s: %w", u.GetKind(), u.GetName(), err)
	}
	return nil
}

// splitYAML cuts a multi-document YAML stream into documents.
func splitYAML(data []byte) [][]byte {
	var out [][]byte
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
		if strings.TrimSpace(doc) != "" {
			out = append(out, []byte(doc))
		}
	}
	return out
}
