// Package demo runs the seed write-up's story on a local sandbox: deploy alice with the
// seed's Canary, ship a good revision (promoted) and a bad one (rolled back), show each step
// live and draw a timeline. The route goes where the seed's did: coalmine writes it to
// Kuma's Global CP (real kuma-cp where it can run), KDS copies it to the zone CP, and the
// mesh follows the zone's copy. With --flux the releases are Git commits that Flux's real
// kustomize-controller applies. `make demo` runs it through `coalmine demo`.
package demo

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/sandbox"
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
	// Flux ships the releases as Git commits applied by Flux's real controllers (built on
	// first use), instead of server-side applies made as the kustomize-controller makes them.
	Flux bool
	// EmulateKuma runs the emulated Global CP even where kuma-cp could run.
	EmulateKuma bool
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
	// Parts are the lines saying what ran for real.
	Parts []string
	// KumaReal is true when kuma-cp ran as the Global and the zone CP; KumaWhy says why not.
	KumaReal bool
	KumaWhy  string
	// ZoneRouteWriters are the field managers of the zone's copy of the TrafficRoute (with
	// a real zone CP: kuma-cp alone).
	ZoneRouteWriters []string
	// FluxVerdicts are what Flux's Kustomization said after each release (--flux).
	FluxVerdicts []string
	// StartUp is how long the parts took to start, from the first sandbox process to
	// the simulator running (builds excluded); KumaStartUp is the share of Kuma's control
	// planes (the Global CP's apiserver included).
	StartUp, KumaStartUp time.Duration
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
	fs.BoolVar(&cfg.Flux, "flux", false, "ship the releases as Git commits applied by Flux's real source-controller and kustomize-controller (first use builds them: ~6 min on 2 cores)")
	fs.BoolVar(&cfg.EmulateKuma, "emulate-kuma", false, "run the emulated Global CP (no kuma-cp, no zone CP, no KDS) even where kuma-cp could run; also "+sandbox.KumaEmulateEnv+"=1")
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
	runCtx, stopAll := context.WithCancel(ctx)
	defer stopAll()
	wd, err := startWorld(runCtx, cfg, w)
	if wd.sb != nil {
		out.SandboxLogsDir = wd.sb.Dir
	}
	keep := false
	defer func() {
		if !keep {
			wd.stop()
		}
	}()
	if err != nil {
		return out, err
	}
	out.Parts, out.KumaReal, out.KumaWhy = wd.parts, wd.kuma.Real, wd.kuma.Why
	out.StartUp, out.KumaStartUp = wd.startUp, wd.kumaStartUp
	c := wd.zone
	var rel releaser = applyReleaser{c: c}
	if wd.flux != nil {
		rel = &fluxReleaser{c: c, flux: wd.flux}
	}

	canary, err := SeedCanary(cfg.Interval)
	if err != nil {
		return out, err
	}
	how := "applied"
	if cfg.Flux {
		how = "committed to Git; Flux applies"
	}
	say("   deploying %s 1.0.0 (3 replicas) and the seed's Canary (%s them), only apiVersion changed;", AppName, how)
	say("   analysis.interval shortened from the seed's 30s to %s for the demo (--interval)", cfg.Interval)
	if err := rel.deploy(ctx, Release{Image: "ghcr.example/alice:1.0.0"}, canary); err != nil {
		return out, err
	}
	if err := waitPhase(ctx, c, 2*time.Minute, v1beta1.PhaseInitialized, v1beta1.PhaseSucceeded); err != nil {
		return out, fmt.Errorf("wait for the Canary to initialise: %w", err)
	}
	route := AppName + "." + AppNamespace
	say("   Canary initialised: Services alice, alice-primary, alice-canary; TrafficRoute %s on mesh %s at 100%% primary, on the Global CP", route, MeshName)
	if err := wd.checkZoneCopy(ctx, route, &out, say); err != nil {
		return out, err
	}

	tl := &Timeline{SuccessThreshold: 99, LatencyThreshold: 500}
	printer := &Printer{Plain: cfg.Plain, Threshold: 5}

	say("\n== release 1.1.0 (good)")
	start := time.Now()
	good := Release{Image: "ghcr.example/alice:1.1.0", LatencyMs: 40}
	st, err := ship(ctx, c, rel, tl, printer, w, "good", good, v1beta1.PhaseSucceeded, cfg.Timeout)
	out.GoodDuration = time.Since(start)
	if err != nil {
		return out, err
	}
	if err := expectRunning(ctx, c, "ghcr.example/alice:1.1.0", false); err != nil {
		return out, fmt.Errorf("after promotion: %w", err)
	}
	out.GoodPromoted = st.Phase == v1beta1.PhaseSucceeded
	say("   promoted in %.0fs: alice runs 1.1.0, 100%% primary, alice-canary removed", out.GoodDuration.Seconds())
	if err := wd.checkZoneCopy(ctx, route, &out, say); err != nil {
		return out, err
	}
	if err := sayVerdict(ctx, rel, true, &out, say); err != nil {
		return out, err
	}

	say("\n== release 1.2.0 (bad: 20%% of requests fail)")
	start = time.Now()
	bad := Release{Image: "ghcr.example/alice:1.2.0", ErrorRate: 0.2, LatencyMs: 40}
	st, err = ship(ctx, c, rel, tl, printer, w, "bad", bad, v1beta1.PhaseFailed, cfg.Timeout)
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
	if err := wd.checkZoneCopy(ctx, route, &out, say); err != nil {
		return out, err
	}
	if err := sayVerdict(ctx, rel, false, &out, say); err != nil {
		return out, err
	}

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
	say("   ran on: %s", strings.Join(wd.shortParts(), ", "))

	if cfg.Keep {
		keep = true
		say("\n== sandbox kept running")
		say("   export KUBECONFIG=%s", wd.sb.KubeconfigPath)
		say("   Global CP: KUBECONFIG=%s", wd.kuma.Global.KubeconfigPath)
		say("   stop it with: kill -INT %d   (or Ctrl-C here)", os.Getpid())
		say("   web view: http://%s/   main Prometheus (the Grafana dashboard's queries work there): %s", wd.webAddr, wd.sb.PrometheusURL)
		<-ctx.Done()
		stopped := time.Now()
		stopAll()
		wd.stop()
		say("   stopped in %.1fs", time.Since(stopped).Seconds())
	}
	if !out.GoodPromoted || !out.BadRolledBack {
		return out, errors.New("expected the good release promoted and the bad one rolled back")
	}
	return out, nil
}

// sayVerdict prints what the delivery tool concluded, when there is one.
func sayVerdict(ctx context.Context, rel releaser, promoted bool, out *Outcome, say func(string, ...any)) error {
	v, err := rel.verdict(ctx, promoted)
	if err != nil || v == "" {
		return err
	}
	out.FluxVerdicts = append(out.FluxVerdicts, v)
	say("   %s", v)
	return nil
}

// freeAddrs are two loopback addresses for coalmine's /metrics and its web view.
func freeAddrs() (metrics, web string, err error) {
	p, err := FreePorts(2)
	if err != nil {
		return "", "", err
	}
	return "127.0.0.1:" + strconv.Itoa(p[0]), "127.0.0.1:" + strconv.Itoa(p[1]), nil
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0 && !strings.EqualFold(os.Getenv("TERM"), "dumb")
}
