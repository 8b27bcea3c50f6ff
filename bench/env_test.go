//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/cmd/coalmine/app"
	"github.com/coalmine-dev/coalmine/cmd/coalmine/demo"
	"github.com/coalmine-dev/coalmine/sandbox"
	"github.com/coalmine-dev/coalmine/sandbox/meshsim"
)

// The mesh traffic simulator runs in a child process (this test binary again), so the
// memory and CPU this process uses are coalmine's and the benchmark driver's alone.
const (
	simKubeconfigEnv = "COALMINE_BENCH_SIMULATOR_KUBECONFIG"
	simAddrPrefix    = "meshsim listening on "
	// simulatorRPS is each caller's request rate: at the first step (10%) the canary gets
	// 5 requests a second, plenty for the builtin queries.
	simulatorRPS = 50
)

// Names every benchmark shares.
const (
	meshName = "mesh-bench"
	// fieldManager applies the apps as Flux's kustomize-controller does.
	fieldManager = "kustomize-controller"
	// sandboxStartTimeout bounds building (cold: ~10 min on two cores) and starting the
	// sandbox.
	sandboxStartTimeout = 30 * time.Minute
)

func TestMain(m *testing.M) {
	if kubeconfig := os.Getenv(simKubeconfigEnv); kubeconfig != "" {
		os.Exit(runSimulator(kubeconfig))
	}
	flag.Parse()
	if os.Getenv("COALMINE_BENCH_PROFILE_DIR") != "" {
		// Finer heap profiles than the default one sample per 512 KiB.
		runtime.MemProfileRate = 16 * 1024
		if r, err := strconv.Atoi(os.Getenv("COALMINE_BENCH_MEMPROFILERATE")); err == nil && r > 0 {
			runtime.MemProfileRate = r
		}
	}
	code := m.Run()
	if shared != nil {
		shared.stop(code == 0)
	}
	os.Exit(code)
}

// runSimulator is the child process: the mesh simulator against the sandbox, until its
// stdin closes (the parent stopped or died).
func runSimulator(kubeconfig string) int {
	ctrllog.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.InfoLevel)))
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshsim: load kubeconfig:", err)
		return 1
	}
	cfg.QPS, cfg.Burst = 100, 200
	rps, _ := strconv.ParseFloat(os.Getenv("COALMINE_BENCH_SIMULATOR_RPS"), 64)
	ctx, cancel := context.WithCancel(ctrllog.IntoContext(context.Background(), ctrllog.Log))
	defer cancel()
	sim, err := meshsim.Start(ctx, meshsim.Options{Config: cfg, RPS: rps})
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshsim:", err)
		return 1
	}
	fmt.Println(simAddrPrefix + sim.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	cancel()
	select {
	case <-sim.Done():
	case <-time.After(10 * time.Second):
	}
	return 0
}

// env is what the benchmarks share: one sandbox, the simulator in a child process, and
// one coalmine in this process under its ServiceAccount, its apiserver requests and
// Prometheus queries counted.
type env struct {
	sb       *sandbox.Sandbox
	admin    client.WithWatch
	coalmine *demo.Instance
	api      *requestCounter
	prom     *queryCounter
	promSrv  *http.Server
	sim      *exec.Cmd
	simIn    io.WriteCloser
	logPath  string

	// beforeCoalmine and atRest are the process's memory before coalmine started and once
	// it started and went quiet, with no Canary in the cluster.
	beforeCoalmine, atRest memUsage
	startup                time.Duration
	// informers are the cluster-wide lists and watches coalmine made while starting.
	informers string
	// standalone is the coalmine binary at rest in a process of its own.
	standalone    standaloneUsage
	standaloneErr error

	// keepLogs keeps the sandbox's directory: a wait ran out of time.
	keepLogs atomic.Bool

	// namespaces created by earlier sub-benchmarks, deleted before the next one measures.
	mu         sync.Mutex
	namespaces []string
}

var (
	// extraCRDs are CRD files or directories a benchmark needs installed besides
	// coalmine's, set before the environment starts (BenchmarkPeer: Flagger's).
	extraCRDs []string

	envOnce sync.Once
	shared  *env
	envErr  error
)

// sharedEnv starts the environment once per test binary.
func sharedEnv(b *testing.B) *env {
	b.Helper()
	envOnce.Do(func() {
		e := &env{}
		envErr = e.start()
		shared = e
	})
	if envErr != nil {
		b.Fatalf("start benchmark environment: %v", envErr)
	}
	return shared
}

func (e *env) start() error {
	ctx, cancel := context.WithTimeout(context.Background(), sandboxStartTimeout)
	defer cancel()
	root, err := sandbox.RepoRoot()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "coalmine-bench-")
	if err != nil {
		return fmt.Errorf("create sandbox directory: %w", err)
	}
	// Coalmine logs at info level as in production, to a file: its logging is part of its
	// CPU, the console is for the figures.
	e.logPath = filepath.Join(dir, "coalmine.log")
	logFile, err := os.Create(e.logPath)
	if err != nil {
		return fmt.Errorf("create coalmine log: %w", err)
	}
	ctrllog.SetLogger(zap.New(zap.WriteTo(logFile), zap.Level(zapcore.InfoLevel)))

	fmt.Fprintln(os.Stderr, "bench: starting the sandbox (state and logs in "+dir+")")
	e.sb, err = sandbox.Start(ctx, sandbox.Options{
		Dir:     dir,
		Log:     os.Stderr,
		CRDDirs: append([]string{filepath.Join(root, "manifests", "crd")}, extraCRDs...),
		// envtest's /24 holds 254 Service IPs; every canary takes three.
		APIServerFlags: map[string]string{"service-cluster-ip-range": "10.0.0.0/16"},
	})
	if err != nil {
		return fmt.Errorf("start sandbox: %w", err)
	}
	if e.admin, err = client.NewWithWatch(e.sb.Config, client.Options{Scheme: app.NewScheme()}); err != nil {
		return fmt.Errorf("create admin client: %w", err)
	}
	if err := e.startSimulator(ctx); err != nil {
		return err
	}
	mesh := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kuma.io/v1alpha1", "kind": "Mesh",
		"metadata": map[string]any{"name": meshName},
	}}
	if err := e.apply(ctx, mesh); err != nil {
		return err
	}

	port, err := demo.FreePort()
	if err != nil {
		return err
	}
	if err := demo.Install(ctx, e.sb, port); err != nil {
		return fmt.Errorf("install coalmine: %w", err)
	}
	if e.prom, err = newQueryCounter(e.sb.PrometheusURL); err != nil {
		return err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen for the Prometheus proxy: %w", err)
	}
	e.promSrv = &http.Server{Handler: e.prom, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = e.promSrv.Serve(l) }()
	promURL := "http://" + l.Addr().String()

	e.beforeCoalmine = measureMemory()
	e.api = newRequestCounter()
	started := time.Now()
	// Everything coalmine runs descends from this goroutine and carries the label.
	pprof.Do(context.Background(), pprof.Labels(labelComponent, labelCoalmine), func(lctx context.Context) {
		lctx = ctrllog.IntoContext(lctx, ctrllog.Log)
		e.coalmine, err = demo.StartCoalmine(lctx, e.sb, port, func(o *app.Options) {
			o.RESTConfig.Wrap(e.api.wrap)
			// A Proxy func of its own keeps client-go from sharing the admin client's
			// cached transport, so coalmine's connections are its own (and labelled).
			o.RESTConfig.Proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
			o.MetricsServer = promURL
		})
	})
	if err != nil {
		return err
	}
	if err := e.waitQuiet(ctx, 2*time.Second, time.Minute); err != nil {
		return err
	}
	e.startup = time.Since(started)
	e.atRest = measureMemory()
	e.informers = formatBy(e.api.snapshot().tally("").by, 1, listsAndWatches)
	// Only now: the in-process coalmine made the serving certificate with the loopback IP
	// the webhook configurations call; the standalone one finds it and keeps it.
	e.standalone, e.standaloneErr = e.measureStandalone(ctx, root)
	if e.standaloneErr != nil {
		fmt.Fprintln(os.Stderr, "bench: standalone coalmine not measured:", e.standaloneErr)
	}
	return nil
}

// standaloneUsage is the coalmine binary's memory at rest, read from outside (RSS) and from
// its own /metrics (Go heap, not collected on demand).
type standaloneUsage struct {
	rss, heapInuse uint64
	window         time.Duration
}

// measureStandalone builds bin/coalmine, runs it against the sandbox under the
// ServiceAccount and reads its memory at rest: the base figure without this test process
// around coalmine. Then it stops it. It runs without leader election (the Lease is the
// in-process coalmine's, and RBAC only lets coalmine renew that one name): with no Canary
// in the cluster yet the two have nothing to share.
func (e *env) measureStandalone(ctx context.Context, root string) (standaloneUsage, error) {
	var u standaloneUsage
	bin := filepath.Join(e.sb.Dir, "coalmine")
	start := time.Now()
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/coalmine")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return u, fmt.Errorf("build coalmine: %w: %s", err, out)
	}
	fmt.Fprintf(os.Stderr, "bench: built coalmine in %s\n", time.Since(start).Round(100*time.Millisecond))
	kubeconfig, err := e.sb.KubeconfigFor(demo.Username, "system:serviceaccounts", "system:serviceaccounts:"+demo.Namespace, "system:authenticated")
	if err != nil {
		return u, err
	}
	ports, err := demo.FreePorts(3)
	if err != nil {
		return u, err
	}
	logPath := filepath.Join(e.sb.Dir, "coalmine-standalone.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return u, fmt.Errorf("create standalone log: %w", err)
	}
	defer logFile.Close()
	metricsURL := "http://127.0.0.1:" + strconv.Itoa(ports[2]) + "/metrics"
	cmd := exec.Command(bin,
		"--kubeconfig="+kubeconfig,
		"--namespace="+demo.Namespace,
		"--webhook-host=127.0.0.1", "--webhook-port="+strconv.Itoa(ports[0]),
		"--health-probe-bind-address=127.0.0.1:"+strconv.Itoa(ports[1]),
		"--metrics-bind-address=127.0.0.1:"+strconv.Itoa(ports[2]),
		"--cert-dir="+filepath.Join(e.sb.Dir, "standalone-certs"),
		"--metrics-server="+e.sb.PrometheusURL,
		"--leader-elect=false",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return u, fmt.Errorf("start coalmine: %w", err)
	}
	// exited is closed once the process is gone, so both the wait for readiness and the
	// deferred stop can see it (a value sent once would be taken by the first of them).
	var exitErr error
	exited := make(chan struct{})
	go func() { exitErr = cmd.Wait(); close(exited) }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()

	// Ready (certificate served) and the Canary controller started (caches synced).
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	readyz := "http://127.0.0.1:" + strconv.Itoa(ports[1]) + "/readyz?verbose"
	var last error
	for {
		select {
		case <-exited:
			return u, fmt.Errorf("coalmine exited: %v; log ends:\n%s", exitErr, logTail(logPath))
		case <-ctx.Done():
			return u, fmt.Errorf("coalmine not ready: %w (%v)", ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
		if last = httpOK(readyz); last != nil {
			continue
		}
		// controller-runtime logs this once the caches synced.
		if data, err := os.ReadFile(logPath); err == nil && bytes.Contains(data, []byte(`"msg":"Starting workers","controller":"canary"`)) {
			break
		}
		last = errors.New("the canary controller has not started its workers")
	}
	// At rest: sample a few seconds and keep the largest figures.
	pid := strconv.Itoa(cmd.Process.Pid)
	const window = 5 * time.Second
	for end := time.Now().Add(window); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		u.rss = max(u.rss, readRSSOf(pid))
		if h, err := scrapeSample(metricsURL, "go_memstats_heap_inuse_bytes"); err == nil {
			u.heapInuse = max(u.heapInuse, uint64(h))
		}
	}
	u.window = window
	return u, nil
}

// httpOK is nil if u answers 200, else says what it answered.
func httpOK(u string) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
		return fmt.Errorf("%s: %s: %s", u, resp.Status, body)
	}
	return nil
}

// logTail is the last lines of a log file.
func logTail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return strings.Join(lines[max(0, len(lines)-10):], "\n")
}

// scrapeSample reads the first sample of metric name carrying every one of labels
// (`name="canary"`) from a Prometheus text endpoint.
func scrapeSample(u, name string, labels ...string) (float64, error) {
	resp, err := http.Get(u)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 64*1024), 1<<20)
	for s.Scan() {
		line := s.Text()
		metric, _, _ := strings.Cut(line, " ")
		if n, _, _ := strings.Cut(metric, "{"); n != name {
			continue
		}
		matched := true
		for _, l := range labels {
			matched = matched && strings.Contains(metric, l)
		}
		if !matched {
			continue
		}
		fields := strings.Fields(line)
		return strconv.ParseFloat(fields[len(fields)-1], 64)
	}
	return 0, fmt.Errorf("%s%v not found at %s", name, labels, u)
}

// waitQuiet waits until coalmine has made no apiserver request but leader-election ones
// for quiet: its caches are synced and its start-up writes done.
func (e *env) waitQuiet(ctx context.Context, quiet, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if time.Since(e.api.quietSince()) >= quiet {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("coalmine did not go quiet within %s", timeout)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (e *env) startSimulator(ctx context.Context) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the test binary: %w", err)
	}
	logFile, err := os.Create(filepath.Join(e.sb.Dir, "meshsim.log"))
	if err != nil {
		return fmt.Errorf("create simulator log: %w", err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), simKubeconfigEnv+"="+e.sb.KubeconfigPath,
		"COALMINE_BENCH_SIMULATOR_RPS="+strconv.Itoa(simulatorRPS))
	cmd.Stderr = logFile
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("simulator stdin: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("simulator stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start simulator: %w", err)
	}
	e.sim, e.simIn = cmd, stdin
	addr := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			if a, ok := strings.CutPrefix(s.Text(), simAddrPrefix); ok {
				addr <- a
			}
		}
	}()
	select {
	case a := <-addr:
		if err := e.sb.AddScrapeTarget(ctx, "meshsim", a); err != nil {
			return fmt.Errorf("scrape the simulator: %w", err)
		}
		return nil
	case <-time.After(time.Minute):
		return fmt.Errorf("simulator did not start within a minute (log: %s)", logFile.Name())
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stop stops everything; the sandbox's directory (every process's log, coalmine's) is
// removed only if clean.
func (e *env) stop(clean bool) {
	if e.coalmine != nil {
		if err := e.coalmine.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "bench: stop coalmine:", err)
		}
	}
	if e.promSrv != nil {
		_ = e.promSrv.Close()
	}
	if e.sim != nil {
		_ = e.simIn.Close()
		done := make(chan struct{})
		go func() { _ = e.sim.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = e.sim.Process.Kill()
		}
	}
	if e.sb != nil {
		dir := e.sb.Dir
		if err := e.sb.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "bench: stop sandbox:", err)
			clean = false
		}
		if !clean || e.keepLogs.Load() {
			fmt.Fprintln(os.Stderr, "bench: logs kept in", dir)
			return
		}
		_ = os.RemoveAll(dir)
	}
}

// createNamespace creates a mesh namespace in the webhook's scope (kuma=true) or out of
// it, and waits for its default ServiceAccount (pods need it).
func (e *env) createNamespace(ctx context.Context, name string, inMesh bool) error {
	ns := &corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
	}
	if inMesh {
		ns.Labels = map[string]string{v1beta1.LabelSidecarInjection: "enabled"}
		ns.Annotations = map[string]string{v1beta1.AnnotationMesh: meshName}
	}
	if err := e.apply(ctx, ns); err != nil {
		return err
	}
	e.mu.Lock()
	e.namespaces = append(e.namespaces, name)
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		err := e.admin.Get(ctx, client.ObjectKey{Namespace: name, Name: "default"}, &corev1.ServiceAccount{})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the default ServiceAccount of %s: %w", name, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// deleteNamespaces deletes the namespaces earlier sub-benchmarks created (coalmine
// finalizes their Canaries) and waits until they are gone, so the next measurement starts
// from an empty cluster. Not fatal: a namespace that lingers is reported.
func (e *env) deleteNamespaces(ctx context.Context, b *testing.B, keep ...string) {
	e.mu.Lock()
	var del, kept []string
	for _, ns := range e.namespaces {
		if slices.Contains(keep, ns) {
			kept = append(kept, ns)
		} else {
			del = append(del, ns)
		}
	}
	e.namespaces = kept
	e.mu.Unlock()
	if len(del) == 0 {
		return
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for _, ns := range del {
		err := e.admin.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		if err != nil && !apierrors.IsNotFound(err) {
			b.Logf("delete namespace %s: %v", ns, err)
		}
	}
	for _, ns := range del {
		for {
			err := e.admin.Get(ctx, client.ObjectKey{Name: ns}, &corev1.Namespace{})
			if apierrors.IsNotFound(err) {
				break
			}
			if ctx.Err() != nil {
				b.Logf("namespace %s still there after %s; measuring anyway", ns, time.Since(start).Round(time.Second))
				return
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	b.Logf("deleted namespaces %s in %s", strings.Join(del, ", "), time.Since(start).Round(100*time.Millisecond))
}

// apply server-side applies o as Flux's kustomize-controller would.
func (e *env) apply(ctx context.Context, o client.Object) error {
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		m, err := k8sruntime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			return fmt.Errorf("convert %s: %w", o.GetName(), err)
		}
		u = &unstructured.Unstructured{Object: m}
		gvk, err := apiutil.GVKForObject(o, e.admin.Scheme())
		if err != nil {
			return fmt.Errorf("find kind of %s: %w", o.GetName(), err)
		}
		u.SetGroupVersionKind(gvk)
	}
	u.SetManagedFields(nil)
	u.SetResourceVersion("")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "status")
	if err := e.admin.Patch(ctx, u, client.Apply, client.FieldOwner(fieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return nil
}

// appDeployment is one benchmark app: one replica on the fake node, healthy.
func appDeployment(namespace, name, image string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	replicas := int32(1)
	d := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{
						Name:  "app",
						Image: image,
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
						Env: []corev1.EnvVar{
							{Name: "SIM_ERROR_RATE", Value: "0"},
							{Name: "SIM_LATENCY_MS", Value: "20"},
						},
					}},
				},
			},
		},
	}
	sandbox.SchedulableOnFakeNode(&d.Spec.Template.Spec)
	return d
}

// Analysis of the benchmark Canaries: the seed's Canary with 5 steps of 10% up to 50% and a
// 2 s interval.
const (
	analysisInterval = 2 * time.Second
	stepWeight       = 10
	maxWeight        = 50
	steps            = maxWeight / stepWeight
)

// appCanary is the seed's Canary (both builtin metrics, threshold 5) for one app.
func appCanary(namespace, name string) *v1beta1.Canary {
	protocol := &v1beta1.CustomMetadata{Annotations: map[string]string{"8080.service.kuma.io/protocol": "http"}}
	return &v1beta1.Canary{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1beta1.GroupVersion.String(), Kind: "Canary"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: v1beta1.CanarySpec{
			TargetRef: v1beta1.LocalObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: name},
			Service: v1beta1.CanaryService{
				Port: 8080, TargetPort: intstr.FromString("http"), PortName: "http",
				Apex: protocol, Primary: protocol, Canary: protocol,
			},
			Analysis: &v1beta1.CanaryAnalysis{
				Interval:   analysisInterval.String(),
				Threshold:  5,
				MaxWeight:  maxWeight,
				StepWeight: stepWeight,
				Metrics: []v1beta1.CanaryMetric{
					{Name: v1beta1.MetricRequestSuccessRate, Threshold: 99, Interval: "1m"},
					{Name: v1beta1.MetricRequestDuration, Threshold: 500, Interval: "30s"},
				},
			},
		},
	}
}

// parallel runs fn for 0..n-1 on a few workers and returns the first error.
func parallel(n, workers int, fn func(i int) error) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		next = make(chan int)
	)
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

// waitCanaries watches the Canaries of namespace until done holds for every one named in
// want, and returns when each first did (as this process saw it). On timeout it says how
// many are missing and in which phases.
func (e *env) waitCanaries(ctx context.Context, namespace string, want []string, timeout time.Duration,
	done func(*v1beta1.Canary) bool) (map[string]time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	wanted := map[string]bool{}
	for _, n := range want {
		wanted[n] = true
	}
	at := map[string]time.Time{}
	phases := map[string]v1beta1.CanaryPhase{}
	see := func(c *v1beta1.Canary) {
		if !wanted[c.Name] {
			return
		}
		phases[c.Name] = c.Status.Phase
		if _, ok := at[c.Name]; !ok && done(c) {
			at[c.Name] = time.Now()
		}
	}
	// An apiserver swamped by a thousand rollouts times requests out now and then: try
	// again until the deadline, which alone ends the wait.
	var last error
	retry := func(err error) error {
		last = err
		select {
		case <-ctx.Done():
			return e.waitError(namespace, want, at, phases, fmt.Errorf("%w (last error: %v)", ctx.Err(), last))
		case <-time.After(time.Second):
			return nil
		}
	}
	for {
		var list v1beta1.CanaryList
		if err := e.admin.List(ctx, &list, client.InNamespace(namespace)); err != nil {
			if err := retry(err); err != nil {
				return at, err
			}
			continue
		}
		for i := range list.Items {
			see(&list.Items[i])
		}
		if len(at) == len(want) {
			return at, nil
		}
		w, err := e.admin.Watch(ctx, &v1beta1.CanaryList{}, client.InNamespace(namespace),
			&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: list.ResourceVersion}})
		if err != nil {
			if err := retry(err); err != nil {
				return at, err
			}
			continue
		}
		for ev := range w.ResultChan() {
			if ev.Type == watch.Error {
				break // relist
			}
			if c, ok := ev.Object.(*v1beta1.Canary); ok {
				see(c)
			}
			if len(at) == len(want) {
				w.Stop()
				return at, nil
			}
		}
		w.Stop()
		if ctx.Err() != nil {
			return at, e.waitError(namespace, want, at, phases, ctx.Err())
		}
	}
}

func (e *env) waitError(namespace string, want []string, at map[string]time.Time, phases map[string]v1beta1.CanaryPhase, err error) error {
	count := map[v1beta1.CanaryPhase]int{}
	for _, n := range want {
		if _, ok := at[n]; !ok {
			count[phases[n]]++
		}
	}
	return fmt.Errorf("%d of %d Canaries in %s done, the others in phases %v (coalmine log %s): %w",
		len(at), len(want), namespace, count, e.logPath, err)
}
