package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
)

// config is the size of a run.
type config struct {
	name        string
	apps        int
	rollouts    int // releases shipped, at least
	kills       int // SIGKILLs; the first half with one replica, the rest with two
	promOutages int
	meshOutages int
	killGap     [2]time.Duration
	outageGap   [2]time.Duration
	drive       time.Duration // bound of the whole drive phase
}

var (
	shortRun = config{name: "short", apps: 6, rollouts: 20, kills: 5, promOutages: 1, meshOutages: 1,
		killGap: [2]time.Duration{5 * time.Second, 12 * time.Second}, outageGap: [2]time.Duration{20 * time.Second, 45 * time.Second},
		drive: 8 * time.Minute}
	fullRun = config{name: "full", apps: 20, rollouts: 110, kills: 24, promOutages: 3, meshOutages: 3,
		killGap: [2]time.Duration{6 * time.Second, 14 * time.Second}, outageGap: [2]time.Duration{30 * time.Second, 60 * time.Second},
		drive: 40 * time.Minute}
)

// Outage windows. A Prometheus outage fails every check it spans: promOutage is short
// enough (3 intervals) that a good release stays below the threshold of 8 failed checks.
const (
	promOutage = 6 * time.Second
	meshOutage = 10 * time.Second
	// handoverBound: the follower takes a killed leader's Lease once the lease duration
	// (controller-runtime's 15 s) has passed since it last saw the Lease change, and it
	// looks every retry period (2 s, client-go jitters it up to 4.4 s): at most
	// 15 + 4.4 + 4.4 s after the kill, +1 s for reading its log.
	handoverBound = 25 * time.Second
)

// TestChaosShort is the short run of `make test`: 20 rollouts, 5 kills, 2 outages.
func TestChaosShort(t *testing.T) { runChaos(t, shortRun) }

// TestChaos is `make chaos`: 110 rollouts over 24 apps, 24 kills, 6 outages.
func TestChaos(t *testing.T) {
	if os.Getenv("COALMINE_CHAOS_FULL") != "1" {
		t.Skip("the full chaos run is `make chaos` (COALMINE_CHAOS_FULL=1)")
	}
	runChaos(t, fullRun)
}

type killRecord struct {
	at       time.Duration
	slot     int
	pair     bool
	leader   bool
	recovery time.Duration // until some replica leads again
}

type run struct {
	t     *testing.T
	cfg   config
	seed  uint64
	start time.Time
	w     *world
	obs   *observer
	adm   *admissions
	drv   *driver

	mu       sync.Mutex
	kills    []killRecord
	outages  []string
	doneKill bool
	doneOut  bool
	problems []string // the run itself broke (not an invariant)
}

func (r *run) logf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintf(os.Stderr, "chaos %6.1fs: %s\n", time.Since(r.start).Seconds(), msg)
	if r.obs != nil && !strings.HasPrefix(msg, "VIOLATION") {
		r.obs.journal("%s", msg)
	}
}

func (r *run) problem(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.logf("PROBLEM: %s", msg)
	r.mu.Lock()
	r.problems = append(r.problems, msg)
	r.mu.Unlock()
}

func chaosSeed(t *testing.T) uint64 {
	if s := os.Getenv("CHAOS_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED=%q: %v", s, err)
		}
		return n
	}
	return uint64(time.Now().UnixNano() % 1_000_000_000)
}

func runChaos(t *testing.T, cfg config) {
	r := &run{t: t, cfg: cfg, seed: chaosSeed(t), start: time.Now()}
	r.logf("%s run, seed %d (CHAOS_SEED=%d replays its plan)", cfg.name, r.seed, r.seed)
	dir, err := os.MkdirTemp("", "coalmine-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Minute+cfg.drive)
	defer cancel()

	w, err := setUp(ctx, dir, 2, r.logf)
	r.w = w
	defer func() {
		start := time.Now()
		if err := w.tearDown(); err != nil {
			r.logf("tear down: %v", err)
		}
		r.logf("torn down in %s", time.Since(start).Round(100*time.Millisecond))
		if t.Failed() {
			r.logf("state and logs kept in %s", dir)
		} else {
			_ = os.RemoveAll(dir)
		}
	}()
	if err != nil {
		t.Fatalf("set up: %v", err)
	}
	r.adm = newAdmissions(w.fleet)
	r.drv = newDriver(w, nil, r.adm, r.seed, cfg.apps, r.logf)
	r.obs = newObserver(r.drv.refs(), r.logf)
	r.drv.obs = r.obs
	r.adm.onViolation = func(f admissionFailure) {
		r.obs.mu.Lock()
		r.obs.violate("A", nil, "%s call failed while a replica was serving (%s .. %s): %s", f.caller,
			f.start.Sub(r.start).Round(time.Millisecond), f.end.Sub(r.start).Round(time.Millisecond), f.err)
		r.obs.mu.Unlock()
	}
	r.obs.start = r.start
	if jf, err := os.Create(filepath.Join(dir, "observer.log")); err == nil {
		defer jf.Close()
		var jmu sync.Mutex
		r.obs.journal = func(format string, args ...any) {
			jmu.Lock()
			defer jmu.Unlock()
			fmt.Fprintf(jf, "%8.3fs %s\n", time.Since(r.start).Seconds(), fmt.Sprintf(format, args...))
		}
	}
	if err := r.obs.run(ctx, w.zone.Config, w.global.Config); err != nil {
		t.Fatalf("start the observer: %v", err)
	}
	defer r.obs.close()

	in, err := w.fleet.start(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.waitReady(ctx, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	r.logf("coalmine 0 ready (pid %d, under %s)", in.cmd.Process.Pid, "system:serviceaccount:coalmine-system:coalmine")

	// Apps, all at once.
	var wg sync.WaitGroup
	errs := make(chan error, cfg.apps)
	for _, a := range r.drv.apps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.drv.initApp(ctx, a); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("initialize apps: %v", err)
	}
	r.logf("%d apps initialized (TrafficRoute on the Global CP for even ones, MeshHTTPRoute on the zone for odd ones)", cfg.apps)

	driveCtx, stopDrive := context.WithTimeout(ctx, cfg.drive)
	defer stopDrive()
	r.drv.enough = func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.drv.shipped.Load() >= int64(cfg.rollouts) && r.doneKill && r.doneOut
	}
	bgCtx, stopBG := context.WithCancel(driveCtx)
	writer := &competingWriter{w: w, adm: r.adm, refs: r.drv.refs(), rng: rand.New(rand.NewPCG(r.seed, 1001))}
	prb := &prober{w: w, adm: r.adm, refs: r.drv.refs(), rng: rand.New(rand.NewPCG(r.seed, 1002))}
	var bg sync.WaitGroup
	for _, f := range []func(context.Context){writer.run, prb.run, r.killLoop, r.outageLoop} {
		bg.Add(1)
		go func() { defer bg.Done(); f(bgCtx) }()
	}
	for _, a := range r.drv.apps {
		wg.Add(1)
		go func() { defer wg.Done(); r.drv.run(driveCtx, a) }()
	}
	wg.Wait()
	driveCut := driveCtx.Err() != nil
	if driveCut {
		r.problem("the drive phase did not finish within %s (shipped %d of %d, kills done %v, outages done %v)",
			cfg.drive, r.drv.shipped.Load(), cfg.rollouts, r.doneKill, r.doneOut)
	}
	stopBG()
	bg.Wait()
	r.logf("drive done: %d releases shipped; writer %d writes (%d conflicts), prober %d calls",
		r.drv.shipped.Load(), writer.writes.Load(), writer.conflicts.Load(), prb.calls.Load())

	// Every verdict in, then delete every Canary and check nothing is left.
	r.waitSettled(ctx, 3*time.Minute, "the last outcomes")
	for _, a := range r.drv.apps {
		c := &coalminev1beta1.Canary{}
		c.Namespace, c.Name = a.ref.ns, a.ref.name
		if err := w.zc.Delete(ctx, c); client.IgnoreNotFound(err) != nil {
			r.problem("delete canary %s: %v", a.ref, err)
		}
	}
	for _, a := range r.drv.apps {
		if err := r.obs.waitGone(ctx, a.ref, stuckBound); err != nil {
			r.obs.mu.Lock()
			r.obs.violate("I4", r.obs.apps[a.ref.ns], "%v", err)
			r.obs.mu.Unlock()
		}
	}
	r.waitSettled(ctx, i4Bound+10*time.Second, "the clean-up checks")
	for _, p := range r.obs.present() {
		r.obs.mu.Lock()
		r.obs.violate("I4", nil, "Canary still present after deletion: %s", p)
		r.obs.mu.Unlock()
	}
	for _, e := range w.fleet.unexpectedExits() {
		r.obs.mu.Lock()
		r.obs.violate("P", nil, "%s", e)
		r.obs.mu.Unlock()
	}
	r.obs.finish()
	report := r.report(time.Since(r.start))
	addSummary(report)
	r.obs.mu.Lock()
	v := len(r.obs.violations)
	r.obs.mu.Unlock()
	if v > 0 {
		t.Errorf("%d invariant violations (table at the end of the output)", v)
	}
	for _, p := range r.problems {
		t.Errorf("run problem: %s", p)
	}
}

func (r *run) waitSettled(ctx context.Context, timeout time.Duration, what string) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for !r.obs.settled() {
		select {
		case <-ctx.Done():
			r.logf("still waiting for %s after %s", what, timeout)
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (r *run) uniform(rng *rand.Rand, span [2]time.Duration) time.Duration {
	return span[0] + time.Duration(rng.Int64N(int64(span[1]-span[0])+1))
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// killLoop SIGKILLs coalmine at seeded random moments: the first half of the kills with
// one replica (the loop and the webhooks are down until it is back and has the Lease),
// the rest with two (the leader or the follower; the other keeps serving the webhooks and
// takes the Lease over).
func (r *run) killLoop(ctx context.Context) {
	defer func() { r.mu.Lock(); r.doneKill = true; r.mu.Unlock() }()
	rng := rand.New(rand.NewPCG(r.seed, 2001))
	f := r.w.fleet
	for k := 0; k < r.cfg.kills; k++ {
		pair := k >= r.cfg.kills/2
		if pair && len(f.running()) < 2 {
			in, err := f.start(1)
			if err != nil {
				r.problem("start the second replica: %v", err)
				return
			}
			if err := in.waitReady(ctx, 90*time.Second); err != nil {
				r.problem("second replica: %v", err)
				return
			}
			r.logf("second replica ready: two coalmine processes, one Lease")
		}
		if !sleepCtx(ctx, r.uniform(rng, r.cfg.killGap)) {
			return
		}
		victim := 0
		if pair {
			leader := -1
			for _, i := range f.running() {
				if f.leads(i) {
					leader = i
				}
			}
			victim = rng.IntN(2)
			if leader >= 0 && rng.IntN(10) < 6 {
				victim = leader
			}
		}
		wasLeader := f.leads(victim)
		end := r.obs.disrupt("kill")
		killedAt := time.Now()
		in, err := f.kill(victim)
		if err != nil {
			r.problem("kill replica %d: %v", victim, err)
			end()
			return
		}
		rec := killRecord{at: killedAt.Sub(r.start), slot: victim, pair: pair, leader: wasLeader}
		r.logf("SIGKILL coalmine %d.%d (pid %d, %s, %d replica(s))", victim, in.n, in.cmd.Process.Pid,
			map[bool]string{true: "leader", false: "not leader"}[wasLeader], map[bool]int{true: 2, false: 1}[pair])
		delay := time.Duration(200+rng.IntN(2800)) * time.Millisecond
		if !sleepCtx(ctx, delay) {
			end()
			return
		}
		next, err := f.start(victim)
		if err != nil {
			r.problem("restart replica %d: %v", victim, err)
			end()
			return
		}
		// Recovered when some replica holds the Lease again.
		recovered := false
		for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; {
			if slices.ContainsFunc(f.running(), f.leads) {
				recovered = true
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		rec.recovery = time.Since(killedAt)
		end()
		if !recovered {
			r.problem("no coalmine holds the Lease 90s after kill %d", k+1)
		} else if pair && wasLeader && rec.recovery > handoverBound {
			r.obs.mu.Lock()
			r.obs.violate("H", nil, "leader killed at %s: a new leader after %s, want within %s", rec.at.Round(100*time.Millisecond), rec.recovery.Round(100*time.Millisecond), handoverBound)
			r.obs.mu.Unlock()
		}
		r.mu.Lock()
		r.kills = append(r.kills, rec)
		r.mu.Unlock()
		if err := next.waitReady(ctx, 90*time.Second); err != nil && ctx.Err() == nil {
			r.problem("restarted replica: %v", err)
			return
		}
		r.logf("coalmine %d.%d back; a leader after %s", victim, next.n, rec.recovery.Round(100*time.Millisecond))
	}
}

// outageLoop cuts Prometheus and the Global CP's apiserver at seeded random moments.
func (r *run) outageLoop(ctx context.Context) {
	defer func() { r.mu.Lock(); r.doneOut = true; r.mu.Unlock(); close(r.drv.outagesOver) }()
	rng := rand.New(rand.NewPCG(r.seed, 3001))
	var kinds []string
	for i := 0; i < r.cfg.promOutages; i++ {
		kinds = append(kinds, "prometheus")
	}
	for i := 0; i < r.cfg.meshOutages; i++ {
		kinds = append(kinds, "global-cp")
	}
	rng.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	for _, k := range kinds {
		if !sleepCtx(ctx, r.uniform(rng, r.cfg.outageGap)) {
			return
		}
		end := r.obs.disrupt(k)
		start := time.Now()
		var err error
		switch k {
		case "prometheus":
			r.logf("OUTAGE prometheus: stopped for %s", promOutage)
			if err = r.w.zone.StopPrometheus(); err == nil {
				sleepCtx(ctx, promOutage)
				err = r.w.zone.StartPrometheus(context.WithoutCancel(ctx))
			}
		case "global-cp":
			req := r.nextOutageRequest(ctx)
			start = time.Now()
			r.logf("OUTAGE global-cp: kube-apiserver of the Global CP killed for %s", meshOutage)
			if err = r.w.global.StopAPIServer(); err == nil {
				if req != nil {
					close(req.begun)
				}
				sleepCtx(ctx, meshOutage)
				err = r.w.global.StartAPIServer(context.WithoutCancel(ctx))
			}
		}
		end()
		if err != nil {
			r.problem("%s outage: %v", k, err)
			return
		}
		r.logf("%s back after %s", k, time.Since(start).Round(100*time.Millisecond))
		r.mu.Lock()
		r.outages = append(r.outages, fmt.Sprintf("%s %s at %s", k, time.Since(start).Round(100*time.Millisecond), start.Sub(r.start).Round(time.Second)))
		r.mu.Unlock()
	}
}

// nextOutageRequest takes a driver's request for this outage, if one waits, and returns
// once its canary carries traffic (bounded).
func (r *run) nextOutageRequest(ctx context.Context) *outageRequest {
	for {
		select {
		case req := <-r.drv.meshOutages:
			if req.abandoned.Load() {
				continue
			}
			close(req.go_)
			select {
			case <-req.ready:
			case <-ctx.Done():
			case <-time.After(2 * time.Minute):
			}
			return req
		default:
			return nil
		}
	}
}

// report renders the figures, the violations table and the summary line (last).
func (r *run) report(wall time.Duration) string {
	o := r.obs
	o.mu.Lock()
	defer o.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "\n== chaos %s run, seed %d (CHAOS_SEED=%d replays it), wall time %s\n", r.cfg.name, r.seed, r.seed, wall.Round(time.Second))
	fmt.Fprintf(&b, "apps %d (%d TrafficRoute on the Global CP, %d MeshHTTPRoute), releases shipped %d\n",
		r.cfg.apps, (r.cfg.apps+1)/2, r.cfg.apps/2, r.drv.shipped.Load())
	keys := make([]string, 0, len(o.outcomes))
	for k := range o.outcomes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "  %-45s %d\n", k, o.outcomes[k])
	}
	for _, e := range []expectation{expectSucceeded, expectFailed, expectReverted} {
		if ds := o.durations[e]; len(ds) > 0 {
			slices.Sort(ds)
			fmt.Fprintf(&b, "  %-45s median %s, max %s (ship to outcome)\n", e.String()+" duration", ds[len(ds)/2].Round(100*time.Millisecond), ds[len(ds)-1].Round(100*time.Millisecond))
		}
	}
	single, pair, leaders := 0, 0, 0
	var handover, recovery time.Duration
	for _, k := range r.kills {
		if k.pair {
			pair++
			if k.leader {
				leaders++
				handover = max(handover, k.recovery)
			}
		} else {
			single++
			recovery = max(recovery, k.recovery)
		}
	}
	fmt.Fprintf(&b, "kills %d: %d with one replica (a leader again after at most %s), %d with two (%d of the leader; new leader within %s)\n",
		len(r.kills), single, recovery.Round(100*time.Millisecond), pair, leaders, handover.Round(100*time.Millisecond))
	fmt.Fprintf(&b, "outages %d: %s\n", len(r.outages), strings.Join(r.outages, ", "))
	a := r.adm
	a.mu.Lock()
	fmt.Fprintf(&b, "admission calls %d (%v): failed %d = %d with no replica ready (one replica, killed) + %d on a connection to the replica being SIGKILLed + %d while a replica served\n",
		a.calls, a.byCaller, a.failed, a.failedNoReplica, a.failedCut, len(a.failedServed))
	a.mu.Unlock()
	fmt.Fprintf(&b, "balancer: connections per replica %d/%d, refused (no replica) %d\n",
		r.w.fleet.lb.forwarded[0].Load(), r.w.fleet.lb.forwarded[1].Load(), r.w.fleet.lb.refused.Load())
	byInv := map[string]int{}
	for _, v := range o.violations {
		byInv[v.inv]++
	}
	fmt.Fprintf(&b, "violations by invariant: I1 %d, I2 %d, I3 %d, I4 %d, I5 %d, A (admission) %d, H (handover) %d, P (crash) %d\n",
		byInv["I1"], byInv["I2"], byInv["I3"], byInv["I4"], byInv["I5"], byInv["A"], byInv["H"], byInv["P"])
	if len(o.violations) > 0 {
		fmt.Fprintf(&b, "%-4s %-16s %9s  %s\n", "inv", "app", "time", "what")
		for _, v := range o.violations {
			fmt.Fprintf(&b, "%-4s %-16s %8.1fs  %s\n", v.inv, v.app, v.at.Seconds(), v.detail)
		}
	}
	fmt.Fprintf(&b, "chaos: rollouts=%d kills=%d outages=%d violations=%d", r.drv.shipped.Load(), len(r.kills), len(r.outages), len(o.violations))
	return b.String()
}
