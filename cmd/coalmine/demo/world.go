package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coalmine-dev/coalmine/cmd/coalmine/app"
	"github.com/coalmine-dev/coalmine/sandbox"
	"github.com/coalmine-dev/coalmine/sandbox/meshsim"
)

// world is what the story runs on: the zone cluster (kube-apiserver, etcd,
// controller-manager, scheduler, kwok, the two Prometheus tiers), Kuma's Global CP and a
// zone CP connected over KDS (the emulated Global where kuma-cp cannot run), Flux's
// controllers and a Git server with --flux, coalmine, and the mesh traffic simulator.
type world struct {
	sb   *sandbox.Sandbox
	kuma *sandbox.KumaMultiZone
	flux *sandbox.Flux // nil without --flux
	in   *Instance
	sim  *meshsim.Simulator
	// zone and global are admin clients: the demo's own reads and applies, never coalmine's.
	zone, global client.Client
	webAddr      string
	// parts says what runs for real, one line each, as printed.
	parts []string
	// startUp is how long the parts took to start (builds excluded), kumaStartUp the
	// share of Kuma's control planes (the Global's apiserver included).
	startUp, kumaStartUp time.Duration
	stopSim              context.CancelFunc
}

// startWorld builds what is missing and starts every part, saying what runs; on error
// what was started is stopped.
func startWorld(ctx context.Context, cfg Config, out io.Writer) (_ *world, err error) {
	say := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }
	w := &world{}
	defer func() {
		if err != nil {
			w.stop()
		}
	}()
	say("   building or reusing the sandbox binaries (first run: ~25 minutes on 2 cores)")
	bins, err := sandbox.BuildDemo(ctx, out)
	if err != nil {
		return w, fmt.Errorf("build sandbox: %w", err)
	}
	if cfg.Flux {
		say("   building or reusing Flux's source-controller, kustomize-controller and Git server (first run: ~6 more minutes)")
		if err := sandbox.BuildFlux(ctx, out, bins); err != nil {
			return w, fmt.Errorf("build Flux: %w", err)
		}
	}
	root, err := sandbox.RepoRoot()
	if err != nil {
		return w, fmt.Errorf("find the coalmine repository (run the demo from it): %w", err)
	}
	t0 := time.Now()
	if w.sb, err = sandbox.Start(ctx, sandbox.Options{Log: out, Binaries: bins, CRDDirs: []string{filepath.Join(root, "manifests", "crd")}}); err != nil {
		return w, fmt.Errorf("start sandbox: %w", err)
	}
	say("   zone cluster up in %.1fs; zone Prometheus %s (zone %s) remote-writing to main Prometheus %s",
		time.Since(t0).Seconds(), w.sb.Zone().URL(), w.sb.Zone().Zone, w.sb.PrometheusURL)

	t1 := time.Now()
	if w.kuma, err = sandbox.StartKumaMultiZone(ctx, w.sb, sandbox.KumaOptions{Log: out, Meshes: []string{MeshName}, Emulate: cfg.EmulateKuma}); err != nil {
		return w, fmt.Errorf("start Kuma's control planes: %w", err)
	}
	w.kumaStartUp = time.Since(t1)
	if w.kuma.Real {
		say("   Kuma's Global CP and zone CP %s up in %.1fs (KDS synced the meshes in %.1fs)", w.kuma.ZoneName, w.kumaStartUp.Seconds(), w.kuma.KDSSync.Seconds())
	} else {
		say("   emulated Global CP up in %.1fs", w.kumaStartUp.Seconds())
	}
	if cfg.Flux {
		if w.flux, err = w.sb.StartFlux(ctx); err != nil {
			return w, err
		}
	}
	if w.zone, err = client.New(w.sb.Config, client.Options{Scheme: app.NewScheme()}); err != nil {
		return w, fmt.Errorf("create zone client: %w", err)
	}
	if w.global, err = client.New(w.kuma.Global.Config, client.Options{Scheme: app.NewScheme()}); err != nil {
		return w, fmt.Errorf("create Global CP client: %w", err)
	}
	w.parts = w.describeParts()
	say("\n== what runs")
	for _, p := range w.parts {
		say("   %s", p)
	}
	if !w.kuma.Real {
		say("   NOTICE: kuma-cp does not run (%s):", w.kuma.Why)
		say("   NOTICE: the Global CP is emulated (an apiserver with Kuma's CRDs, an admission policy standing in for Kuma's validator), no zone CP, no KDS;")
		say("   NOTICE: the simulator follows the Global's route. As root (CI is), the real control planes run.")
	}
	say("")
	if err := w.startCoalmineAndMesh(ctx, say); err != nil {
		return w, err
	}
	w.startUp = time.Since(t0)
	say("   every part up %.1fs after the first one started (Kuma's control planes: %.1fs of it)", w.startUp.Seconds(), w.kumaStartUp.Seconds())
	return w, nil
}

// startCoalmineAndMesh installs and starts coalmine (routes written to the Global CP through
// --mesh-kubeconfig, under its own ServiceAccount there too), creates the mesh and the
// app's namespace, and starts the simulator on the routes its data planes would follow.
func (w *world) startCoalmineAndMesh(ctx context.Context, say func(string, ...any)) error {
	port, err := FreePort()
	if err != nil {
		return err
	}
	if err := Install(ctx, w.sb, port); err != nil {
		return err
	}
	if err := InstallMeshRBAC(ctx, w.global); err != nil {
		return err
	}
	meshKubeconfig, err := w.kuma.Global.KubeconfigFor(Username, serviceAccountGroups...)
	if err != nil {
		return err
	}
	metricsAddr, webAddr, err := freeAddrs()
	if err != nil {
		return err
	}
	if w.in, err = StartCoalmine(ctx, w.sb, port, func(o *app.Options) {
		o.MetricsBindAddress, o.WebAddress = metricsAddr, webAddr
		o.MeshKubeconfig = meshKubeconfig
	}); err != nil {
		return err
	}
	metricsAddr, w.webAddr = w.in.Options.MetricsBindAddress, w.in.Options.WebAddress // fresh ones if a port was taken
	if err := w.sb.AddScrapeTarget(ctx, "coalmine", metricsAddr); err != nil {
		return fmt.Errorf("scrape coalmine's metrics: %w", err)
	}
	say("   coalmine running as %s, webhooks on https://127.0.0.1:%d", Username, port)
	say("   it writes TrafficRoutes to the Global CP (--mesh-kubeconfig=%s, the same ServiceAccount)", meshKubeconfig)
	say("   web view (read-only, live): http://%s/canaries/%s/%s ; its /metrics scraped by the zone Prometheus", w.webAddr, AppNamespace, AppName)

	// The mesh is the Global CP's (KDS brings it to the zone); the emulation has no KDS,
	// so the zone gets its own copy, as before.
	targets := []client.Client{w.global}
	if !w.kuma.Real {
		targets = append(targets, w.zone)
	}
	for _, c := range targets {
		if err := applyObject(ctx, c, seedMesh()); err != nil {
			return err
		}
	}
	if err := applyObject(ctx, w.zone, meshNamespace()); err != nil {
		return err
	}
	// Data planes take their routes from their zone CP: with a real one the simulator
	// follows the zone's KDS copy, in the emulation the Global's route.
	routes := w.kuma.Global.Config
	if w.kuma.Real {
		routes = w.sb.Config
	}
	simCtx, stopSim := context.WithCancel(ctx)
	if w.sim, err = meshsim.Start(simCtx, meshsim.Options{Config: w.sb.Config, RouteConfig: routes, Namespaces: []string{AppNamespace}}); err != nil {
		stopSim()
		return fmt.Errorf("start mesh traffic simulator: %w", err)
	}
	w.stopSim = stopSim
	if err := w.sb.AddScrapeTarget(ctx, "mesh-callers", w.sim.Addr()); err != nil {
		return fmt.Errorf("scrape the simulator: %w", err)
	}
	follows := "the Global CP's route (no zone CP)"
	if w.kuma.Real {
		follows = "the zone CP's copy of the route, as data planes would"
	}
	say("   mesh traffic simulator plays the Envoy callers of %s, following %s;", AppName, follows)
	say("   the zone Prometheus scrapes it every second, coalmine queries only main (--metrics-server=%s), as the seed's Flagger did", w.sb.PrometheusURL)
	return nil
}

// describeParts is the list of real parts, with their versions, as the screen shows it.
func (w *world) describeParts() []string {
	v := func(name string) string {
		if version, err := sandbox.ToolVersion(name); err == nil {
			return name + " " + version
		}
		return name
	}
	parts := []string{
		fmt.Sprintf("%s and %s (the zone cluster's and the Global CP's), %s, kube-scheduler", v("kube-apiserver"), v("etcd"), v("kube-controller-manager")),
		v("kwok") + ": fake nodes whose pods become Ready (no containers run)",
		v("prometheus") + ": a zone server scraping and remote-writing to a main one (coalmine queries main)",
	}
	if w.kuma.Real {
		parts = append(parts, fmt.Sprintf("%s: Global CP and zone CP %s (Kubernetes mode, Kuma's own validating webhooks), connected over KDS", v("kuma-cp"), w.kuma.ZoneName))
	} else {
		parts = append(parts, "kuma-cp: NOT RUNNING, emulated (see the notice below)")
	}
	if w.flux != nil {
		parts = append(parts, fmt.Sprintf("Flux: %s, %s, a Git server (%s): releases are Git commits",
			v("source-controller"), v("kustomize-controller"), v("gitserver")))
	} else {
		parts = append(parts, "Flux: not run; releases are server-side applies made as kustomize-controller makes them (make demo ARGS=--flux runs the real controllers)")
	}
	return append(parts, "emulated: the Envoy data planes (the mesh traffic simulator) and the app's containers")
}

// shortParts is the summary's one-line list of the real parts.
func (w *world) shortParts() []string {
	v := func(name string) string {
		version, _ := sandbox.ToolVersion(name)
		return strings.TrimSpace(name + " " + version)
	}
	parts := []string{v("kube-apiserver"), v("kube-controller-manager"), v("prometheus")}
	if w.kuma.Real {
		parts = append(parts, v("kuma-cp")+" Global + zone (KDS)")
	} else {
		parts = append(parts, "emulated Global CP (kuma-cp did not run)")
	}
	if w.flux != nil {
		parts = append(parts, "Flux "+v("source-controller")+" + "+v("kustomize-controller"))
	}
	return parts
}

// checkZoneCopy says where the route is on the zone: with a real zone CP, KDS's copy of
// the Global CP's, written by kuma-cp alone (recorded in out), which the mesh follows.
func (w *world) checkZoneCopy(ctx context.Context, route string, out *Outcome, say func(string, ...any)) error {
	if !w.kuma.Real {
		return nil
	}
	start := time.Now()
	writers, err := w.expectZoneCopy(ctx, route)
	out.ZoneRouteWriters = writers
	if err != nil {
		return err
	}
	say("   zone %s holds KDS's copy of %s, equal to the Global CP's (seen within %.1fs; written there by %s alone)",
		w.kuma.ZoneName, route, time.Since(start).Seconds(), strings.Join(writers, ", "))
	return nil
}

// expectZoneCopy waits until the zone's TrafficRoute is the Global CP's as KDS copies it:
// the same spec, written on the zone by kuma-cp alone. It returns the writers seen.
func (w *world) expectZoneCopy(ctx context.Context, name string) ([]string, error) {
	var writers []string
	err := sandbox.Poll(ctx, 30*time.Second, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		global, err := getTrafficRoute(ctx, w.global, name)
		if err != nil {
			return false, fmt.Errorf("on the Global CP: %w", err)
		}
		zone, err := getTrafficRoute(ctx, w.zone, name)
		if err != nil {
			return false, fmt.Errorf("on zone %s: %w", w.kuma.ZoneName, err)
		}
		writers = writers[:0]
		for _, f := range zone.GetManagedFields() {
			if !slices.Contains(writers, f.Manager) {
				writers = append(writers, f.Manager)
			}
		}
		if !reflect.DeepEqual(global.Object["spec"], zone.Object["spec"]) {
			return false, errors.New("the zone's copy differs from the Global CP's route")
		}
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("TrafficRoute %s: KDS copy: %w", name, err)
	}
	if !slices.Equal(writers, []string{sandbox.KumaManager}) {
		return writers, fmt.Errorf("TrafficRoute %s on zone %s was written by %s, want %s alone", name, w.kuma.ZoneName, strings.Join(writers, ", "), sandbox.KumaManager)
	}
	return writers, nil
}

func getTrafficRoute(ctx context.Context, c client.Client, name string) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("kuma.io/v1alpha1")
	u.SetKind("TrafficRoute")
	return u, c.Get(ctx, client.ObjectKey{Name: name}, u)
}

// stop stops every part: coalmine and the simulator first, then the rest together. The
// sandboxes are thrown away, so Kuma's control planes are killed without their drain or
// the zone's clean-up (KumaMultiZone.Discard): a kept demo stops within 3 s of Ctrl-C.
func (w *world) stop() {
	if w.in != nil {
		_ = w.in.Stop()
	}
	if w.stopSim != nil {
		w.stopSim()
		<-w.sim.Done()
	}
	var wg sync.WaitGroup
	if w.flux != nil {
		wg.Go(func() { _ = w.flux.Stop() })
	}
	if w.kuma != nil {
		wg.Go(func() { _ = w.kuma.Discard() })
	}
	if w.sb != nil {
		wg.Go(func() { _ = w.sb.Stop() })
	}
	wg.Wait()
}
