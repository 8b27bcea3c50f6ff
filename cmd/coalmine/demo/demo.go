// Package demo runs the seed write-up's story on a local sandbox: deploy alice with the
// seed's Canary, ship a good revision (promoted) and a bad one (rolled back), show each step
// live and draw a timeline. `make demo` runs it through `coalmine demo`.
package demo

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/cmd/coalmine/app"
	"github.com/coalmine-dev/coalmine/sandbox"
	"github.com/coalmine-dev/coalmine/sandbox/meshsim"
)

//go:embed seed-canary.yaml
var seedCanary []byte

// The seed's names.
const (
	AppNamespace = "apps-a-mesh-a"
	MeshName     = "mesh-a"
	AppName      = "alice"
)

// Config is what `coalmine demo` takes from its flags.
type Config struct {
	// Interval replaces the seed's 30s analysis interval so the demo takes minutes.
	Interval time.Duration
	Plain    bool
	Keep     bool
	OutDir   string
	Out      io.Writer
	// Timeout bounds each release.
	Timeout time.Duration
}

// Outcome is what the demo observed.
type Outcome struct {
	GoodPromoted   bool
	BadRolledBack  bool
	BadReason      string
	TimelinePath   string
	GoodDuration   time.Duration
	BadDuration    time.Duration
	SandboxLogsDir string
}

// Main is `coalmine demo`: it parses args, runs the story and returns the exit code.
func Main(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("coalmine demo", flag.ContinueOnError)
	cfg := Config{Out: os.Stdout}
	fs.DurationVar(&cfg.Interval, "interval", 5*time.Second, "analysis interval used instead of the seed's 30s, so the story takes minutes")
	fs.BoolVar(&cfg.Plain, "plain", !isTerminal(os.Stdout), "plain lines instead of bars and colours (default when stdout is not a terminal)")
	fs.BoolVar(&cfg.Keep, "keep", false, "leave the sandbox running at the end and print its KUBECONFIG")
	fs.StringVar(&cfg.OutDir, "out", "demo-output", "directory for the timeline picture")
	fs.DurationVar(&cfg.Timeout, "timeout", 10*time.Minute, "time bound of each release")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		fmt.Fprintf(cfg.Out, "demo: create %s: %v\n", cfg.OutDir, err)
		return 1
	}
	logPath := filepath.Join(cfg.OutDir, "coalmine.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		fmt.Fprintf(cfg.Out, "demo: create %s: %v\n", logPath, err)
		return 1
	}
	defer logFile.Close()
	ctrl.SetLogger(zap.New(zap.WriteTo(logFile), zap.UseDevMode(false), zap.Level(zapcore.Level(-1))))
	out, err := Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(cfg.Out, "\ndemo failed: %v\n", err)
		fmt.Fprintf(cfg.Out, "coalmine's log: %s\n", logPath)
		if out.SandboxLogsDir != "" {
			fmt.Fprintf(cfg.Out, "logs of every sandbox process: %s\n", out.SandboxLogsDir)
		}
		return 1
	}
	return 0
}

// Run plays the story and reports what happened; err is nil only if the good release was
// promoted and the bad one rolled back.
func Run(ctx context.Context, cfg Config) (Outcome, error) {
	var out Outcome
	w := cfg.Out
	say := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }

	say("== coalmine demo: the seed write-up's story on a local sandbox")
	say("   building or reusing the sandbox binaries (first run: ~10-15 minutes on 2 cores)")
	if _, err := sandbox.Build(ctx, w); err != nil {
		return out, fmt.Errorf("build sandbox: %w", err)
	}
	root, err := sandbox.RepoRoot()
	if err != nil {
		return out, fmt.Errorf("find the coalmine repository (run the demo from it): %w", err)
	}
	t0 := time.Now()
	sb, err := sandbox.Start(ctx, sandbox.Options{Log: w, CRDDirs: []string{filepath.Join(root, "manifests", "crd")}})
	if err != nil {
		return out, fmt.Errorf("start sandbox: %w", err)
	}
	out.SandboxLogsDir = sb.Dir
	keep := false
	defer func() {
		if !keep {
			_ = sb.Stop()
		}
	}()
	say("   sandbox up in %.1fs: kube-apiserver, etcd, controller-manager, scheduler, kwok,", time.Since(t0).Seconds())
	say("   zone Prometheus %s (zone %s) remote-writing to main Prometheus %s", sb.Zone().URL(), sb.Zone().Zone, sb.PrometheusURL)

	port, err := FreePort()
	if err != nil {
		return out, err
	}
	if err := Install(ctx, sb, port); err != nil {
		return out, err
	}
	runCtx, stopAll := context.WithCancel(ctx)
	defer stopAll()
	metricsAddr, webAddr, err := freeAddrs()
	if err != nil {
		return out, err
	}
	in, err := StartCoalmine(runCtx, sb, port, func(o *app.Options) {
		o.MetricsBindAddress, o.WebAddress = metricsAddr, webAddr
	})
	if err != nil {
		return out, err
	}
	defer in.Stop()
	metricsAddr, webAddr = in.Options.MetricsBindAddress, in.Options.WebAddress // fresh ones if a port was taken
	if err := sb.AddScrapeTarget(ctx, "coalmine", metricsAddr); err != nil {
		return out, fmt.Errorf("scrape coalmine's metrics: %w", err)
	}
	say("   coalmine running as %s, webhooks on https://127.0.0.1:%d", Username, port)
	say("   web view (read-only, live): http://%s/canaries/%s/%s ; its /metrics scraped by the zone Prometheus", webAddr, AppNamespace, AppName)

	c, err := client.New(sb.Config, client.Options{Scheme: app.NewScheme()})
	if err != nil {
		return out, fmt.Errorf("create client: %w", err)
	}
	if err := createMeshNamespace(ctx, c); err != nil {
		return out, err
	}
	sim, err := meshsim.Start(runCtx, meshsim.Options{Config: sb.Config, Namespaces: []string{AppNamespace}})
	if err != nil {
		return out, fmt.Errorf("start mesh traffic simulator: %w", err)
	}
	if err := sb.AddScrapeTarget(ctx, "mesh-callers", sim.Addr()); err != nil {
		return out, fmt.Errorf("scrape the simulator: %w", err)
	}
	say("   mesh traffic simulator plays the Envoy callers of %s; the zone Prometheus scrapes it every", AppName)
	say("   second, coalmine queries only main (--metrics-server=%s), as the seed's Flagger did", sb.PrometheusURL)

	if err := ApplyDeployment(ctx, c, Release{Image: "ghcr.example/alice:1.0.0"}); err != nil {
		return out, err
	}
	canary, err := SeedCanary(cfg.Interval)
	if err != nil {
		return out, err
	}
	say("   deploying %s (3 replicas) and the seed's Canary, only apiVersion changed;", AppName)
	say("   analysis.interval shortened from the seed's 30s to %s for the demo (--interval)", cfg.Interval)
	if err := applyObject(ctx, c, canary); err != nil {
		return out, err
	}
	if err := waitPhase(ctx, c, 2*time.Minute, v1beta1.PhaseInitialized, v1beta1.PhaseSucceeded); err != nil {
		return out, fmt.Errorf("wait for the Canary to initialise: %w", err)
	}
	say("   Canary initialised: Services alice, alice-primary, alice-canary; TrafficRoute alice.%s on mesh %s at 100%% primary", AppNamespace, MeshName)

	tl := &Timeline{SuccessThreshold: 99, LatencyThreshold: 500}
	printer := &Printer{Plain: cfg.Plain, Threshold: 5}

	say("\n== release 1.1.0 (good): applied the way Flux does (server-side apply)")
	start := time.Now()
	good := Release{Image: "ghcr.example/alice:1.1.0", LatencyMs: 40}
	st, err := ship(ctx, c, tl, printer, w, "good", good, v1beta1.PhaseSucceeded, cfg.Timeout)
	out.GoodDuration = time.Since(start)
	if err != nil {
		return out, err
	}
	if err := expectRunning(ctx, c, "ghcr.example/alice:1.1.0", false); err != nil {
		return out, fmt.Errorf("after promotion: %w", err)
	}
	out.GoodPromoted = st.Phase == v1beta1.PhaseSucceeded
	say("   promoted in %.0fs: alice runs 1.1.0, 100%% primary, alice-canary removed", out.GoodDuration.Seconds())

	say("\n== release 1.2.0 (bad: 20%% of requests fail)")
	start = time.Now()
	bad := Release{Image: "ghcr.example/alice:1.2.0", ErrorRate: 0.2, LatencyMs: 40}
	st, err = ship(ctx, c, tl, printer, w, "bad", bad, v1beta1.PhaseFailed, cfg.Timeout)
	out.BadDuration = time.Since(start)
	if err != nil {
		return out, err
	}
	if err := expectRunning(ctx, c, "ghcr.example/alice:1.1.0", true); err != nil {
		return out, fmt.Errorf("after rollback: %w", err)
	}
	out.BadRolledBack = st.Phase == v1beta1.PhaseFailed
	out.BadReason = st.Message
	say("   rolled back in %.0fs: %s", out.BadDuration.Seconds(), st.Message)
	say("   alice stays paused on 1.2.0 in Git and the cluster; its pods still run 1.1.0")

	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return out, fmt.Errorf("create %s: %w", cfg.OutDir, err)
	}
	out.TimelinePath, _ = filepath.Abs(filepath.Join(cfg.OutDir, "timeline.svg"))
	f, err := os.Create(out.TimelinePath)
	if err != nil {
		return out, fmt.Errorf("create timeline: %w", err)
	}
	if err := tl.WriteSVG(f); err != nil {
		f.Close()
		return out, err
	}
	if err := f.Close(); err != nil {
		return out, fmt.Errorf("write timeline: %w", err)
	}
	say("\n== summary")
	say("   %-8s %-8s %-10s %-9s %s", "release", "image", "outcome", "duration", "reason")
	say("   %-8s %-8s %-10s %-9s %s", "good", "1.1.0", "promoted", fmt.Sprintf("%.0fs", out.GoodDuration.Seconds()), "all checks passed up to 50%")
	say("   %-8s %-8s %-10s %-9s %s", "bad", "1.2.0", "rolled back", fmt.Sprintf("%.0fs", out.BadDuration.Seconds()), out.BadReason)
	say("   timeline: %s", out.TimelinePath)

	if cfg.Keep {
		keep = true
		say("\n== sandbox kept running")
		say("   export KUBECONFIG=%s", sb.KubeconfigPath)
		say("   stop it with: kill -INT %d   (or Ctrl-C here)", os.Getpid())
		say("   web view: http://%s/   main Prometheus (the Grafana dashboard's queries work there): %s", webAddr, sb.PrometheusURL)
		<-ctx.Done()
		stopped := time.Now()
		_ = in.Stop()
		stopAll()
		_ = sb.Stop()
		say("   stopped in %.1fs", time.Since(stopped).Seconds())
	}
	if !out.GoodPromoted || !out.BadRolledBack {
		return out, errors.New("expected the good release promoted and the bad one rolled back")
	}
	return out, nil
}

// Release is one version of alice: the simulator reads its behaviour from the env.
type Release struct {
	Image     string
	ErrorRate float64
	LatencyMs int
}

// ApplyDeployment server-side applies alice as Flux's kustomize-controller would.
func ApplyDeployment(ctx context.Context, c client.Client, r Release) error {
	labels := map[string]string{"app": AppName}
	replicas := int32(3)
	latency := r.LatencyMs
	if latency == 0 {
		latency = 40
	}
	d := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: AppName, Namespace: AppNamespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Tolerations: []corev1.Toleration{sandbox.FakeNodeToleration},
					Containers: []corev1.Container{{
						Name:  AppName,
						Image: r.Image,
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
						Env: []corev1.EnvVar{
							{Name: "SIM_ERROR_RATE", Value: fmt.Sprint(r.ErrorRate)},
							{Name: "SIM_LATENCY_MS", Value: fmt.Sprint(latency)},
						},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
							HTTPGet: &corev1.HTTPGetAction{Path: "/actuator/health", Port: intstr.FromString("http")},
						}},
					}},
				},
			},
		},
	}
	return applyObject(ctx, c, d)
}

// expectRunning checks what the story promises: alice's ready pods all run image, the
// Deployment is paused or not, and no canary Deployment is left.
func expectRunning(ctx context.Context, c client.Client, image string, paused bool) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var last error
	for {
		last = checkRunning(ctx, c, image, paused)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func checkRunning(ctx context.Context, c client.Client, image string, paused bool) error {
	var d appsv1.Deployment
	if err := c.Get(ctx, client.ObjectKey{Namespace: AppNamespace, Name: AppName}, &d); err != nil {
		return fmt.Errorf("read Deployment %s: %w", AppName, err)
	}
	if d.Spec.Paused != paused {
		return fmt.Errorf("Deployment %s paused=%t, want %t", AppName, d.Spec.Paused, paused)
	}
	var canary appsv1.Deployment
	if err := c.Get(ctx, client.ObjectKey{Namespace: AppNamespace, Name: AppName + v1beta1.CanarySuffix}, &canary); err == nil {
		return fmt.Errorf("Deployment %s%s still exists", AppName, v1beta1.CanarySuffix)
	}
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(AppNamespace), client.MatchingLabels{"app": AppName}); err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	running := 0
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		if got := p.Spec.Containers[0].Image; got != image {
			return fmt.Errorf("pod %s runs %s, want %s", p.Name, got, image)
		}
		running++
	}
	if running == 0 {
		return fmt.Errorf("no pod of %s runs", AppName)
	}
	return nil
}

// SeedCanary is the seed's Canary with the demo's interval.
func SeedCanary(interval time.Duration) (*v1beta1.Canary, error) {
	c := &v1beta1.Canary{}
	if err := yaml.UnmarshalStrict(seedCanary, c); err != nil {
		return nil, fmt.Errorf("decode the seed Canary: %w", err)
	}
	c.Spec.Analysis.Interval = interval.String()
	return c, nil
}

// applyObject server-side applies o as Flux's kustomize-controller would.
func applyObject(ctx context.Context, c client.Client, o client.Object) error {
	return applyAs(ctx, c, o, "kustomize-controller")
}

func createMeshNamespace(ctx context.Context, c client.Client) error {
	mesh := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kuma.io/v1alpha1", "kind": "Mesh",
		"metadata": map[string]any{"name": MeshName},
		"spec": map[string]any{"metrics": map[string]any{
			"enabledBackend": "prometheus-1",
			"backends":       []any{map[string]any{"name": "prometheus-1", "type": "prometheus"}},
		}},
	}}
	ns := &corev1.Namespace{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        AppNamespace,
			Labels:      map[string]string{v1beta1.LabelSidecarInjection: "enabled"},
			Annotations: map[string]string{v1beta1.AnnotationMesh: MeshName},
		},
	}
	for _, o := range []client.Object{mesh, ns} {
		if err := applyObject(ctx, c, o); err != nil {
			return err
		}
	}
	return nil
}

// ship applies a release and follows the Canary until it reaches want (or the other end).
func ship(ctx context.Context, c client.Client, tl *Timeline, p *Printer, w io.Writer,
	label string, r Release, want v1beta1.CanaryPhase, timeout time.Duration) (v1beta1.CanaryStatus, error) {
	if err := ApplyDeployment(ctx, c, r); err != nil {
		return v1beta1.CanaryStatus{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	started := false
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		var cn v1beta1.Canary
		if err := c.Get(ctx, client.ObjectKey{Namespace: AppNamespace, Name: AppName}, &cn); err != nil {
			return cn.Status, fmt.Errorf("read Canary: %w", err)
		}
		st := cn.Status
		if st.Phase == v1beta1.PhaseProgressing || st.Phase == v1beta1.PhasePromoting || st.Phase == v1beta1.PhaseFinalising {
			started = true
		}
		s := sampleOf(label, st, time.Now())
		if started {
			tl.Add(s)
			if p.Changed(s) {
				fmt.Fprintln(w, "   "+p.Line(s))
			}
		}
		if started && (st.Phase == v1beta1.PhaseSucceeded || st.Phase == v1beta1.PhaseFailed) {
			if st.Phase != want {
				return st, fmt.Errorf("%s release ended %s, want %s: %s", label, st.Phase, want, st.Message)
			}
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("%s release: no %s within %s (phase %s, weight %d)", label, want, timeout, st.Phase, st.CanaryWeight)
		case <-tick.C:
		}
	}
}

func waitPhase(ctx context.Context, c client.Client, timeout time.Duration, phases ...v1beta1.CanaryPhase) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		var cn v1beta1.Canary
		if err := c.Get(ctx, client.ObjectKey{Namespace: AppNamespace, Name: AppName}, &cn); err == nil {
			for _, p := range phases {
				if cn.Status.Phase == p {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// sampleOf is the Canary's state as the demo shows it: the weight, phase and failed
// checks, and the success rate and p99 the analysis last measured (the Canary's
// status.metrics), so every line and the picture show the values the decisions used.
func sampleOf(label string, st v1beta1.CanaryStatus, at time.Time) Sample {
	s := Sample{At: at, Release: label, Phase: string(st.Phase), Weight: st.CanaryWeight, Failed: st.FailedChecks,
		SuccessRate: math.NaN(), P99: math.NaN()}
	for _, m := range st.Metrics {
		v, err := strconv.ParseFloat(m.Value, 64)
		if err != nil {
			v = math.NaN()
		}
		switch m.Name {
		case v1beta1.MetricRequestSuccessRate:
			s.SuccessRate, s.SuccessOutcome = v, string(m.Outcome)
		case v1beta1.MetricRequestDuration:
			s.P99, s.P99Outcome = v, string(m.Outcome)
		}
	}
	return s
}

// freeAddrs are two loopback addresses for coalmine's /metrics and its web view.
func freeAddrs() (metrics, web string, err error) {
	m, err := FreePort()
	if err != nil {
		return "", "", err
	}
	w, err := FreePort()
	if err != nil {
		return "", "", err
	}
	return "127.0.0.1:" + strconv.Itoa(m), "127.0.0.1:" + strconv.Itoa(w), nil
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0 && !strings.EqualFold(os.Getenv("TERM"), "dumb")
}
