package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/certs"
	"github.com/coalmine-dev/coalmine/cmd/coalmine/app"
	"github.com/coalmine-dev/coalmine/cmd/coalmine/demo"
	"github.com/coalmine-dev/coalmine/manifests"
	"github.com/coalmine-dev/coalmine/sandbox"
	"github.com/coalmine-dev/coalmine/sandbox/meshsim"
)

var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(apiextensionsv1.AddToScheme(scheme))
	utilruntime.Must(coalminev1beta1.AddToScheme(scheme))
}

// saGroups are the groups of coalmine's ServiceAccount.
var saGroups = []string{"system:serviceaccounts", "system:serviceaccounts:" + demo.Namespace, "system:authenticated"}

// world is what a run stands on: the zone sandbox (the apps' cluster, Prometheus), a
// control-plane-only sandbox for Kuma's Global CP (TrafficRoutes live there; kuma-cp runs
// as the Global and a zone CP where it can, sandbox.StartKumaMultiZone), coalmine
// installed on both as the shipped manifests would, its binary, and the mesh simulator.
type world struct {
	dir            string
	zone, global   *sandbox.Sandbox
	kuma           *sandbox.KumaMultiZone
	zc, gc         client.WithWatch // admin clients: the tests', never coalmine's
	bin            string
	kubeconfig     string // coalmine's ServiceAccount on the zone (impersonation)
	meshKubeconfig string // the same identity on the Global CP
	sim            *meshsim.Simulator
	stopSim        context.CancelFunc
	fleet          *fleet
}

const simulatorJob = "meshsim"

// setUp builds and starts everything but the coalmine processes. The returned world must
// be torn down even on error.
func setUp(ctx context.Context, dir string, slots int, logf func(string, ...any)) (*world, error) {
	w := &world{dir: dir}
	// controller-runtime's logs (the simulator's caches) go to a file.
	if lf, err := os.Create(filepath.Join(dir, "harness-controllers.log")); err == nil {
		log.SetLogger(funcr.New(func(prefix, args string) {
			fmt.Fprintln(lf, time.Now().Format(time.RFC3339Nano), prefix, args)
		}, funcr.Options{}))
	}
	root, err := sandbox.RepoRoot()
	if err != nil {
		return w, err
	}
	// Build the binary while the sandboxes start: both take CPU, neither waits on the other.
	built := make(chan error, 1)
	w.bin = filepath.Join(dir, "bin", "coalmine")
	go func() {
		start := time.Now()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", w.bin, "./cmd/coalmine")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			err = fmt.Errorf("go build ./cmd/coalmine: %w\n%s", err, out)
		} else {
			logf("built %s in %s", w.bin, time.Since(start).Round(100*time.Millisecond))
		}
		built <- err
	}()

	sbLog, err := os.Create(filepath.Join(dir, "sandbox-progress.log"))
	if err != nil {
		return w, err
	}
	w.zone, err = sandbox.Start(ctx, sandbox.Options{
		Dir: filepath.Join(dir, "zone"), Log: sbLog,
		CRDDirs: []string{filepath.Join(root, "manifests", "crd")},
	})
	if err != nil {
		<-built
		return w, fmt.Errorf("start the zone sandbox: %w", err)
	}
	w.kuma, err = sandbox.StartKumaMultiZone(ctx, w.zone, sandbox.KumaOptions{
		Dir: filepath.Join(dir, "global-cp"), Log: sbLog, Meshes: []string{meshName},
	})
	if err != nil {
		<-built
		return w, fmt.Errorf("start the Global control plane: %w", err)
	}
	w.global = w.kuma.Global
	logf("zone sandbox %s, Global CP %s, Prometheus %s (logs in %s)", w.zone.Config.Host, w.global.Config.Host, w.zone.PrometheusURL, dir)
	if w.kuma.Real {
		logf("kuma-cp runs as the Global CP and zone CP %s (KDS); the simulator follows the zone's copies of the routes", w.kuma.ZoneName)
	} else {
		logf("emulated Global CP, no zone CP: %s", w.kuma.Why)
	}
	if w.zc, err = client.NewWithWatch(w.zone.Config, client.Options{Scheme: scheme}); err != nil {
		return w, err
	}
	if w.gc, err = client.NewWithWatch(w.global.Config, client.Options{Scheme: scheme}); err != nil {
		return w, err
	}
	if w.kubeconfig, err = w.zone.KubeconfigFor(demo.Username, saGroups...); err != nil {
		return w, err
	}
	if w.meshKubeconfig, err = w.global.KubeconfigFor(demo.Username, saGroups...); err != nil {
		return w, err
	}

	if w.fleet, err = newFleet(w.bin, dir, slots, nil); err != nil {
		return w, err
	}
	// The shipped namespace, ServiceAccount, RBAC and webhook configurations (sandbox
	// overlay: the URL is the balancer's).
	if err := demo.Install(ctx, w.zone, w.fleet.lb.port()); err != nil {
		return w, fmt.Errorf("install coalmine: %w", err)
	}
	// On the Global CP coalmine only writes TrafficRoutes; the same ServiceAccount gets
	// the shipped RBAC there (as the seed's gcp-kubeconfig would carry some identity).
	if err := installRBAC(ctx, w.gc); err != nil {
		return w, fmt.Errorf("install RBAC on the Global CP: %w", err)
	}
	if err := seedCertificate(ctx, w.zone, dir); err != nil {
		return w, err
	}

	simCtx, stopSim := context.WithCancel(log.IntoContext(context.Background(), log.Log))
	w.stopSim = stopSim
	// The simulator reads the routes directly every tick (a handful of objects), not
	// through an informer: after an outage of the Global CP's apiserver an informer
	// relists with a backoff of up to 30 s, and a data plane that lagged that long would
	// starve canaries of traffic (Kuma's zones resync in ~2 s). A failed read keeps the
	// routes it had, as an Envoy keeps its last configuration. With a real zone CP the
	// routes are the zone's copies, which KDS keeps through an outage of the Global.
	routesConfig := w.global.Config
	if w.kuma.Real {
		routesConfig = w.zone.Config
	}
	routes, err := client.New(routesConfig, client.Options{Scheme: scheme})
	if err != nil {
		return w, err
	}
	if w.sim, err = meshsim.Start(simCtx, meshsim.Options{Config: w.zone.Config, RouteClient: routes, RPS: simulatorRPS}); err != nil {
		return w, fmt.Errorf("start the mesh simulator: %w", err)
	}
	if err := w.zone.AddScrapeTarget(ctx, simulatorJob, w.sim.Addr()); err != nil {
		return w, fmt.Errorf("scrape the mesh simulator: %w", err)
	}
	if err := <-built; err != nil {
		return w, err
	}
	w.fleet.args = []string{
		"--kubeconfig=" + w.kubeconfig,
		"--mesh-kubeconfig=" + w.meshKubeconfig,
		"--namespace=" + demo.Namespace,
		"--metrics-server=" + w.zone.PrometheusURL,
		"--leader-elect=true",
		"--route-kind=" + coalminev1beta1.RouteKindTrafficRoute,
	}
	return w, nil
}

// seedCertificate makes the serving certificate once, as an installer would, with the
// loopback IP the sandbox's webhook URL uses: the binary has no flag for extra names,
// and it keeps every name of a certificate that covers its own (certs: union, no
// re-issue), so its replicas serve this one.
func seedCertificate(ctx context.Context, zone *sandbox.Sandbox, dir string) error {
	c, err := client.New(zone.Impersonate(demo.Username, saGroups...), client.Options{Scheme: app.NewScheme()})
	if err != nil {
		return err
	}
	m := certs.New(c, certs.Options{
		Namespace: demo.Namespace, SecretName: app.TLSSecretName, ServiceName: app.WebhookServiceName,
		CertDir: filepath.Join(dir, "seed-certs"), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		WebhookConfigurations: []string{app.WebhookConfigurationName},
	})
	if err := m.Ensure(ctx); err != nil {
		return fmt.Errorf("seed the webhook certificate: %w", err)
	}
	return nil
}

func installRBAC(ctx context.Context, c client.Client) error {
	objs := []*unstructured.Unstructured{}
	ns := &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: demo.Namespace}}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ns)
	if err != nil {
		return err
	}
	objs = append(objs, &unstructured.Unstructured{Object: m})
	for _, data := range [][]byte{manifests.RBAC, manifests.RBACBindings} {
		more, err := manifests.Objects(data)
		if err != nil {
			return err
		}
		objs = append(objs, more...)
	}
	for _, o := range objs {
		unstructured.RemoveNestedField(o.Object, "metadata", "creationTimestamp")
		if err := c.Patch(ctx, o, client.Apply, client.FieldOwner("coalmine-install"), client.ForceOwnership); err != nil {
			return fmt.Errorf("apply %s %s: %w", o.GetKind(), o.GetName(), err)
		}
	}
	return nil
}

// tearDown stops what setUp started, in an order where each part can exit at once.
func (w *world) tearDown() error {
	var errs []error
	if w.fleet != nil {
		w.fleet.stopAll()
	}
	if w.sim != nil {
		w.stopSim()
		select {
		case <-w.sim.Done():
		case <-time.After(10 * time.Second):
		}
	}
	if w.kuma != nil {
		errs = append(errs, w.kuma.Stop())
	}
	if w.zone != nil {
		errs = append(errs, w.zone.Stop())
	}
	return errors.Join(errs...)
}

func itoa(i int) string { return strconv.Itoa(i) }
