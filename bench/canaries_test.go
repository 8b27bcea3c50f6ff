//go:build linux

package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// Targets from the issue, printed next to the figures.
const (
	targetBaseMiB        = 40
	targetKiBPerCanary   = 40
	targetCPUmsPerCanary = 1.0
	targetWritesPerRoll  = 18
	targetSlowdown       = 1.15
)

// canarySizes are the N of BenchmarkConcurrentCanaries: 1, 50, 200, and 1000 when
// COALMINE_BENCH_MAX allows it (slow on two cores). A smaller COALMINE_BENCH_MAX drops the
// larger ones; COALMINE_BENCH_SIZES ("1,1000") names them outright.
func canarySizes() []int {
	if v := os.Getenv("COALMINE_BENCH_SIZES"); v != "" {
		var out []int
		for _, f := range strings.Split(v, ",") {
			if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
				out = append(out, n)
			}
		}
		return out
	}
	limit := 200
	if v := os.Getenv("COALMINE_BENCH_MAX"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			limit = n
		}
	}
	var out []int
	for _, n := range []int{1, 50, 200, 1000} {
		if n <= limit {
			out = append(out, n)
		}
	}
	return out
}

// canaryResult is what one sub-benchmark measured, for the closing table.
type canaryResult struct {
	n int
	// initTime is from applying the apps and Canaries to all Initialized.
	initTime time.Duration
	// rolloutP50 and rolloutMax are from each app's image change to its Succeeded.
	rolloutP50, rolloutMax, wall time.Duration
	// analysisMax is the longest first step to Promoting (paced by the loop alone);
	// readyWait and promoteWait the longest waits for the cluster (see timeline).
	analysisMax, readyWait, promoteWait time.Duration
	// Mean answer times in ms during the rollout: a Prometheus query, a Canary status
	// update, a route apply.
	promMillis, statusMillis, routeMillis float64
	failed, failedChecks                  int

	// KiB per canary: growth of the collected heap and RSS once all are Initialized, and
	// of the heap after the rollouts.
	heapPerCanary, rssPerCanary, heapAfterPerCanary float64
	// liveHeapPerCanary, liveHeapAfterPerCanary: the same growth in live objects.
	liveHeapPerCanary, liveHeapAfterPerCanary float64
	// heapAtRestMiB is the heap in use the growth counts from: before this N's apps, after
	// the previous N's namespace was deleted.
	heapAtRestMiB float64

	cpuMs, coalmineCPUms float64 // per canary per interval
	profiled             bool
	// apiserverCPUms is the sandbox kube-apiserver's CPU per canary per interval over
	// the rollout (all clients' requests, coalmine's most of them); -1 if unread.
	apiserverCPUms float64

	api        apiTally // per canary per rollout (divided on print)
	initWrites float64  // non-event writes per canary to initialize
	processAPI apiTally // requests not about an app namespace, whole rollout
	promPerInt float64
	loop       loopStats

	// note says why there are no figures (a wait ran out of time).
	note string
}

// giveUp records r (with its note) for the table, keeps the logs and skips the rest of b.
func giveUp(b *testing.B, e *env, r canaryResult) {
	b.Helper()
	e.keepLogs.Store(true)
	resultsMu.Lock()
	results = slices.DeleteFunc(results, func(x canaryResult) bool { return x.n == r.n })
	results = append(results, r)
	resultsMu.Unlock()
	b.Skipf("N=%d: %s", r.n, r.note)
}

func addLoop(a, b loopStats) loopStats {
	return loopStats{
		reconciles: a.reconciles + b.reconciles, reconcileSeconds: a.reconcileSeconds + b.reconcileSeconds,
		queued: a.queued + b.queued, queueSeconds: a.queueSeconds + b.queueSeconds,
	}
}

var (
	resultsMu sync.Mutex
	results   []canaryResult
	// oneRollout is the N=1 rollout time, the reference of the slowdown ratio;
	// oneAnalysis the same for the analysis alone.
	oneRollout, oneAnalysis time.Duration
)

// BenchmarkConcurrentCanaries runs N canaries at once in one namespace per N: N apps (one
// replica each) with the seed's Canary (stepWeight 10 to maxWeight 50, interval 2s, both
// builtin metrics, threshold 5) are initialised, then all get a new image at once by
// server-side apply, and the benchmark waits until every Canary has Succeeded. One op is
// one such rollout of all N. It reports coalmine's memory, CPU, apiserver requests and
// Prometheus queries per canary, and how much longer the slowest of N took than one alone.
func BenchmarkConcurrentCanaries(b *testing.B) {
	e := sharedEnv(b)
	sizes := canarySizes()
	for _, n := range sizes {
		b.Run("N="+strconv.Itoa(n), func(b *testing.B) { benchCanaries(b, e, n) })
	}
	printCanaryTable(e)
}

func benchCanaries(b *testing.B, e *env, n int) {
	ctx := context.Background()
	ns := fmt.Sprintf("bench-canaries-%d", n)
	// Earlier N's canaries are gone before this one measures anything.
	e.deleteNamespaces(ctx, b, managedNS, plainNS)
	if err := e.createNamespace(ctx, ns, true); err != nil {
		b.Fatal(err)
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("app-%04d", i)
	}
	if err := e.waitQuiet(ctx, 2*time.Second, 2*time.Minute); err != nil {
		b.Logf("measuring anyway: %v", err)
	}
	mem0 := measureMemory()
	saveHeapDump(fmt.Sprintf("heapdump-before-apps-n%d", n))
	saveHeapProfile(fmt.Sprintf("heap-before-apps-n%d.pprof", n))
	api0 := e.api.snapshot()

	// Initialize: the apps at v1 and their Canaries, then all Initialized.
	start := time.Now()
	err := parallel(n, 8, func(i int) error {
		if err := e.apply(ctx, appDeployment(ns, names[i], image(1))); err != nil {
			return err
		}
		return e.apply(ctx, appCanary(ns, names[i]))
	})
	if err != nil {
		b.Fatalf("create apps: %v", err)
	}
	_, err = e.waitCanaries(ctx, ns, names, 2*time.Minute+time.Duration(n)*time.Second, func(c *v1beta1.Canary) bool {
		return c.Status.Phase == v1beta1.PhaseInitialized || c.Status.Phase == v1beta1.PhaseSucceeded
	})
	if err != nil {
		// Too slow is a finding, not a failure: say so in the table and move on.
		giveUp(b, e, canaryResult{n: n, note: fmt.Sprintf("not all Initialized within %s: %v", time.Since(start).Round(time.Second), err)})
	}
	r := canaryResult{n: n, initTime: time.Since(start)}
	if err := e.waitQuiet(ctx, 2*time.Second, 2*time.Minute); err != nil {
		b.Logf("measuring anyway: %v", err)
	}
	r.initWrites = float64(e.api.snapshot().minus(api0).tally(ns).writes) / float64(n)
	mem1 := measureMemory()
	saveHeapDump(fmt.Sprintf("heapdump-initialized-n%d", n))
	saveHeapProfile(fmt.Sprintf("heap-initialized-n%d.pprof", n))

	var (
		durations             []time.Duration
		cpu, coalmineCPU      time.Duration
		apiCPU                time.Duration // the sandbox apiserver's
		apiCPUUnread          bool
		profiled              = true
		apiRoll, processRoll  apiTally
		promQueries           int64
		wall                  time.Duration
		failed, failedChecks  int
		apiBefore, apiAfter   requestCounts
		promBefore, promAfter map[string]int64
		loop                  loopStats
		// From each Canary's Events: first step to Promoting (the part the loop paces),
		// and the longest waits for the cluster (canary ready, target rolled).
		analysis               []time.Duration
		readyWait, promoteWait time.Duration
		// Answer times, to tell where a slow pass waits.
		promMicros                int64
		statusMillis, routeMillis float64
	)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		before := map[string]string{}
		var list v1beta1.CanaryList
		if err := e.admin.List(ctx, &list, client.InNamespace(ns)); err != nil {
			b.Fatal(err)
		}
		for _, c := range list.Items {
			before[c.Name] = c.Status.LastPromotedRevision + "/" + c.Status.FailedRevision
		}
		img := image(2 + i)
		apiBefore, promBefore = e.api.snapshot(), e.prom.snapshot()
		promMicros0 := e.prom.micros()[ns]
		cpu0 := cpuTime()
		apiCPU0, apiCPUErr := e.sb.APIServerCPU()
		prof := startCPUProfile(fmt.Sprintf("rollout-n%d-%d", n, i))
		loop0 := readLoopStats()
		b.StartTimer()

		// The new revision for all at once, as one Flux reconciliation would.
		start := time.Now()
		appliedAt := make([]time.Time, n)
		err := parallel(n, 16, func(j int) error {
			if err := e.apply(ctx, appDeployment(ns, names[j], img)); err != nil {
				return err
			}
			appliedAt[j] = time.Now()
			return nil
		})
		if err != nil {
			b.Fatalf("ship %s: %v", img, err)
		}
		doneAt, err := e.waitCanaries(ctx, ns, names, 5*time.Minute+time.Duration(n)*time.Second, func(c *v1beta1.Canary) bool {
			moved := c.Status.LastPromotedRevision+"/"+c.Status.FailedRevision != before[c.Name]
			return moved && (c.Status.Phase == v1beta1.PhaseSucceeded || c.Status.Phase == v1beta1.PhaseFailed)
		})
		b.StopTimer()
		wall += time.Since(start)
		c, _, ok := prof.finish()
		profiled = profiled && ok
		cpu += cpuTime() - cpu0
		if t, err := e.sb.APIServerCPU(); err == nil && apiCPUErr == nil {
			apiCPU += t - apiCPU0
		} else {
			apiCPUUnread = true
		}
		coalmineCPU += c
		apiAfter, promAfter = e.api.snapshot(), e.prom.snapshot()
		loop = addLoop(loop, readLoopStats().minus(loop0))
		if err != nil {
			giveUp(b, e, canaryResult{n: n, initTime: r.initTime, note: fmt.Sprintf("not all Succeeded within %s of the image change: %v", time.Since(start).Round(time.Second), err)})
		}
		ds, slowest := rolloutDurations(names, appliedAt, doneAt)
		durations = append(durations, ds...)
		tl := e.timelines(ctx, b, ns, names, appliedAt)
		b.Logf("timeline of the slowest, %s, from its image change:%s", names[slowest], tl[names[slowest]].text)
		for _, t := range tl {
			if t.analysis > 0 {
				analysis = append(analysis, t.analysis)
			}
			readyWait = max(readyWait, t.readyWait)
			promoteWait = max(promoteWait, t.promoteWait)
		}
		diff := apiAfter.minus(apiBefore)
		apiRoll = addTally(apiRoll, diff.tally(ns))
		processRoll = addTally(processRoll, diff.tally("*"))
		promQueries += promAfter[ns] - promBefore[ns]
		promMicros += e.prom.micros()[ns] - promMicros0
		// A merge patch since the safety work; an update before it (make bench before/after).
		if statusMillis = diff.meanMillis(ns, "patch", "canaries/status"); statusMillis < 0 {
			statusMillis = diff.meanMillis(ns, "update", "canaries/status")
		}
		routeMillis = diff.meanMillis(ns, "patch", "trafficroutes")

		list = v1beta1.CanaryList{}
		if err := e.admin.List(ctx, &list, client.InNamespace(ns)); err != nil {
			b.Fatal(err)
		}
		for _, c := range list.Items {
			failedChecks += c.Status.FailedChecks
			if c.Status.Phase == v1beta1.PhaseFailed {
				failed++
			}
		}
	}
	mem2 := measureMemory()
	saveHeapProfile(fmt.Sprintf("heap-rollout-n%d.pprof", n))

	// Requests about the app namespace are coalmine's per-canary work; the rest of the
	// process-wide tally (leases, cluster-wide watches) is reported apart.
	processRoll = subTally(processRoll, apiRoll)

	rollouts := float64(b.N)
	perCanary := float64(n) * rollouts
	intervals := perCanary * steps
	slices.Sort(durations)
	r.rolloutP50 = durations[len(durations)/2]
	r.rolloutMax = durations[len(durations)-1]
	if len(analysis) > 0 {
		r.analysisMax = slices.Max(analysis)
	}
	r.readyWait, r.promoteWait = readyWait, promoteWait
	if promQueries > 0 {
		r.promMillis = float64(promMicros) / 1000 / float64(promQueries)
	}
	r.statusMillis, r.routeMillis = statusMillis, routeMillis
	r.wall = wall / time.Duration(b.N)
	r.failed, r.failedChecks = failed, failedChecks
	r.heapPerCanary = kib(int64(mem1.heapInuse)-int64(mem0.heapInuse)) / float64(n)
	r.heapAtRestMiB = mib(mem0.heapInuse)
	r.rssPerCanary = kib(int64(mem1.rss)-int64(mem0.rss)) / float64(n)
	r.heapAfterPerCanary = kib(int64(mem2.heapInuse)-int64(mem0.heapInuse)) / float64(n)
	r.liveHeapPerCanary = kib(int64(mem1.heapAlloc)-int64(mem0.heapAlloc)) / float64(n)
	r.liveHeapAfterPerCanary = kib(int64(mem2.heapAlloc)-int64(mem0.heapAlloc)) / float64(n)
	r.cpuMs = ms(cpu) / intervals
	r.coalmineCPUms = ms(coalmineCPU) / intervals
	r.apiserverCPUms = -1
	if !apiCPUUnread {
		r.apiserverCPUms = ms(apiCPU) / intervals
	}
	r.profiled = profiled
	r.api = apiRoll
	r.processAPI = processRoll
	r.promPerInt = float64(promQueries) / intervals
	r.loop = loop
	if n == 1 {
		oneRollout, oneAnalysis = r.rolloutMax, r.analysisMax
	}

	b.ReportMetric(r.rolloutMax.Seconds(), "slowest-rollout-s")
	b.ReportMetric(r.rolloutP50.Seconds(), "p50-rollout-s")
	if oneRollout > 0 {
		b.ReportMetric(float64(r.rolloutMax)/float64(oneRollout), "slowest/N=1")
	}
	if oneAnalysis > 0 && r.analysisMax > 0 {
		b.ReportMetric(float64(r.analysisMax)/float64(oneAnalysis), "slowest-analysis/N=1")
	}
	b.ReportMetric(mib(e.atRest.heapInuse-e.beforeCoalmine.heapInuse), "coalmine-base-heap-MiB")
	b.ReportMetric(mib(e.atRest.rss-e.beforeCoalmine.rss), "coalmine-base-rss-MiB")
	if e.standaloneErr == nil {
		b.ReportMetric(mib(e.standalone.rss), "standalone-base-rss-MiB")
		b.ReportMetric(mib(e.standalone.heapInuse), "standalone-base-heap-MiB")
	}
	b.ReportMetric(r.heapPerCanary, "heap-KiB/canary")
	b.ReportMetric(r.heapAtRestMiB, "heap-before-apps-MiB")
	b.ReportMetric(r.rssPerCanary, "rss-KiB/canary")
	b.ReportMetric(r.heapAfterPerCanary, "heap-after-rollout-KiB/canary")
	b.ReportMetric(r.liveHeapPerCanary, "live-heap-KiB/canary")
	b.ReportMetric(r.liveHeapAfterPerCanary, "live-heap-after-rollout-KiB/canary")
	b.ReportMetric(r.cpuMs, "cpu-ms/canary/interval")
	if profiled {
		b.ReportMetric(r.coalmineCPUms, "coalmine-cpu-ms/canary/interval")
	}
	if r.apiserverCPUms >= 0 {
		b.ReportMetric(r.apiserverCPUms, "apiserver-cpu-ms/canary/interval")
	}
	b.ReportMetric(float64(apiRoll.gets)/perCanary, "gets/canary")
	b.ReportMetric(float64(apiRoll.listsWatches)/perCanary, "lists+watches/canary")
	b.ReportMetric(float64(apiRoll.writes+apiRoll.eventWrites)/perCanary, "writes/canary")
	b.ReportMetric(float64(apiRoll.writes)/perCanary, "non-event-writes/rollout")
	b.ReportMetric(float64(apiRoll.eventWrites)/perCanary, "event-writes/rollout")
	b.ReportMetric(float64(apiRoll.conflicts)/perCanary, "conflicts/rollout")
	b.ReportMetric(r.promPerInt, "prom-queries/canary/interval")
	b.ReportMetric(float64(failedChecks)/perCanary, "failed-checks/rollout")

	b.Logf("N=%d: initialized in %s, rollout wall %s, %d failed, %d failed checks; heap in use at rest %.1f MiB (before the apps), %.1f MiB after init, %.1f MiB after the rollout",
		n, r.initTime.Round(100*time.Millisecond), r.wall.Round(100*time.Millisecond), failed, failedChecks,
		mib(mem0.heapInuse), mib(mem1.heapInuse), mib(mem2.heapInuse))
	b.Logf("N=%d: per rollout of one canary: non-event writes %s; GETs %s", n,
		formatBy(apiRoll.by, perCanary, nonEventWrites), formatBy(apiRoll.by, perCanary, getsOnly))
	b.Logf("N=%d: requests outside the app namespace during the rollout (leader election, cluster-wide watches, certificates): %s",
		n, formatBy(processRoll.by, 1, func(string) bool { return true }))
	b.Logf("N=%d: progression loop during the rollout: %s (MaxConcurrentReconciles is the reconciler's default)", n, r.loop)

	resultsMu.Lock()
	results = slices.DeleteFunc(results, func(x canaryResult) bool { return x.n == n })
	results = append(results, r)
	resultsMu.Unlock()
}

func image(v int) string { return "ghcr.io/coalmine-dev/bench-app:v" + strconv.Itoa(v) }

func addTally(a, b apiTally) apiTally {
	out := apiTally{
		gets: a.gets + b.gets, listsWatches: a.listsWatches + b.listsWatches,
		writes: a.writes + b.writes, eventWrites: a.eventWrites + b.eventWrites,
		conflicts: a.conflicts + b.conflicts, by: map[string]int64{},
	}
	for k, v := range a.by {
		out.by[k] += v
	}
	for k, v := range b.by {
		out.by[k] += v
	}
	return out
}

func subTally(a, b apiTally) apiTally {
	neg := apiTally{
		gets: -b.gets, listsWatches: -b.listsWatches, writes: -b.writes,
		eventWrites: -b.eventWrites, conflicts: -b.conflicts, by: map[string]int64{},
	}
	for k, v := range b.by {
		neg.by[k] = -v
	}
	out := addTally(a, neg)
	for k, v := range out.by {
		if v == 0 {
			delete(out.by, k)
		}
	}
	return out
}

// Filters of formatBy on "verb resource" keys.
func getsOnly(k string) bool { return strings.HasPrefix(k, "get ") }
func nonEventWrites(k string) bool {
	verb, res, _ := strings.Cut(k, " ")
	return isWrite(verb) && res != "events"
}
func listsAndWatches(k string) bool {
	return strings.HasPrefix(k, "list ") || strings.HasPrefix(k, "watch ")
}

// formatBy lists the counts of m whose key keep accepts, divided by per.
func formatBy(m map[string]int64, per float64, keep func(string) bool) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		if keep(k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.3g", k, float64(m[k])/per))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func kib(b int64) float64  { return float64(b) / 1024 }
func mib(b uint64) float64 { return float64(int64(b)) / (1 << 20) }
func ms(d time.Duration) float64 {
	return float64(d) / float64(time.Millisecond)
}

// printCanaryTable prints what the sub-benchmarks measured next to the targets.
func printCanaryTable(e *env) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if len(results) == 0 {
		return
	}
	var s strings.Builder
	fmt.Fprintf(&s, "\ncoalmine loop benchmark: N apps (1 replica) with the seed's Canary, %d steps of %d%%, interval %s, all shipped at once\n",
		steps, stepWeight, analysisInterval)
	fmt.Fprintf(&s, "this process = coalmine + the benchmark driver (the mesh simulator runs in a child process); coalmine started in %s\n",
		e.startup.Round(100*time.Millisecond))
	fmt.Fprintf(&s, "coalmine at rest (no Canary), target base <= %d MiB:\n", targetBaseMiB)
	if e.standaloneErr == nil {
		fmt.Fprintf(&s, "  bin/coalmine in its own process: RSS %.1f MiB, Go heap in use %.1f MiB (largest over %s after it was ready and leading)\n",
			mib(e.standalone.rss), mib(e.standalone.heapInuse), e.standalone.window)
	} else {
		fmt.Fprintf(&s, "  bin/coalmine in its own process: not measured (%v)\n", e.standaloneErr)
	}
	fmt.Fprintf(&s, "  in this process: heap in use +%.1f MiB, RSS +%.1f MiB over the process before it started (process: heap %.1f MiB, RSS %.1f MiB)\n",
		mib(e.atRest.heapInuse-e.beforeCoalmine.heapInuse), mib(e.atRest.rss-e.beforeCoalmine.rss),
		mib(e.atRest.heapInuse), mib(e.atRest.rss))
	fmt.Fprintf(&s, "  cluster-wide lists/watches at start: %s\n\n", e.informers)
	rows := [][]string{{"N", "rollout p50 / max", "max / N=1", "analysis max / N=1", "heap / RSS KiB per canary", "CPU ms per canary per interval",
		"GET / LIST+WATCH per rollout", "non-event writes per rollout", "event writes", "Prom queries per canary per interval"}}
	for _, r := range results {
		if r.note != "" {
			rows = append(rows, []string{strconv.Itoa(r.n), r.note})
			continue
		}
		per := float64(r.n)
		ratio := "-"
		if oneRollout > 0 {
			ratio = fmt.Sprintf("%.2fx", float64(r.rolloutMax)/float64(oneRollout))
		}
		cpu := fmt.Sprintf("%.2f", r.cpuMs)
		if r.profiled {
			cpu += fmt.Sprintf(" (coalmine %.2f)", r.coalmineCPUms)
		}
		if r.apiserverCPUms >= 0 {
			cpu += fmt.Sprintf(", apiserver %.2f", r.apiserverCPUms)
		}
		analysis := "-"
		if oneAnalysis > 0 && r.analysisMax > 0 {
			analysis = fmt.Sprintf("%.1fs, %.2fx", r.analysisMax.Seconds(), float64(r.analysisMax)/float64(oneAnalysis))
		}
		rows = append(rows, []string{
			strconv.Itoa(r.n),
			fmt.Sprintf("%.1fs / %.1fs", r.rolloutP50.Seconds(), r.rolloutMax.Seconds()),
			ratio,
			analysis,
			fmt.Sprintf("%.1f / %.1f", r.heapPerCanary, r.rssPerCanary),
			cpu,
			fmt.Sprintf("%.1f / %.1f", float64(r.api.gets)/per, float64(r.api.listsWatches)/per),
			fmt.Sprintf("%.1f", float64(r.api.writes)/per),
			fmt.Sprintf("%.1f", float64(r.api.eventWrites)/per),
			fmt.Sprintf("%.2f", r.promPerInt),
		})
	}
	rows = append(rows, []string{"target", "", fmt.Sprintf("<= %.2fx", targetSlowdown), "", fmt.Sprintf("<= %d", targetKiBPerCanary),
		fmt.Sprintf("<= %.0f", targetCPUmsPerCanary), "0 / 0 (cache)", fmt.Sprintf("<= %d", targetWritesPerRoll), "", ""})
	writeTable(&s, rows)
	fmt.Fprintf(&s, "\nper canary: heap/RSS = growth after all N are Initialized (GC'd, pages returned; at N=1 it is noise); CPU = getrusage of this process over the rollout / N / %d intervals,\n", steps)
	fmt.Fprintf(&s, "(coalmine) = the part of a CPU profile on coalmine's goroutines (pprof label; excludes background GC); apiserver = the sandbox kube-apiserver's CPU (/proc),\n")
	fmt.Fprintf(&s, "all clients' requests over the same window / N / %d intervals; GET/LIST/writes = apiserver requests under coalmine's\n", steps)
	fmt.Fprintf(&s, "identity naming the app namespace, from the image change to all Succeeded; Prom q/iv = queries through the counting proxy / N / %d;\n", steps)
	fmt.Fprintf(&s, "analysis = first step to Promoting, from the Canaries' Events: the part the loop paces, without the waits for the cluster to run pods.\n")
	for _, r := range results {
		if r.note != "" {
			continue
		}
		fmt.Fprintf(&s, "N=%d: mean answer times: Prometheus query %.0f ms, Canary status write %.0f ms, route apply %.0f ms\n", r.n, r.promMillis, r.statusMillis, r.routeMillis)
		fmt.Fprintf(&s, "N=%d: initialized in %.1fs (%.1f non-event writes per canary), rollout wall %.1fs, longest waits for the cluster: canary ready %.1fs, target rolled %.1fs; %d failed, %d failed checks, heap after the rollout +%.1f KiB/canary, conflicts %.2f/rollout; loop: %s; writes: %s\n",
			r.n, r.initTime.Seconds(), r.initWrites, r.wall.Seconds(), r.readyWait.Seconds(), r.promoteWait.Seconds(), r.failed, r.failedChecks, r.heapAfterPerCanary,
			float64(r.api.conflicts)/float64(r.n), r.loop, formatBy(r.api.by, float64(r.n), nonEventWrites))
	}
	fmt.Print(s.String())
}

// writeTable writes rows as a Markdown table with padded columns; the first row is the
// header. A short row (a note) runs on in its second cell.
func writeTable(w io.Writer, rows [][]string) {
	var widths []int
	for _, row := range rows {
		if len(row) < len(rows[0]) {
			continue
		}
		for i, c := range row {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], len(c))
		}
	}
	line := func(cells []string) {
		for i, c := range cells {
			if len(cells) < len(widths) && i == len(cells)-1 {
				fmt.Fprintf(w, "| %s ", c)
				continue
			}
			fmt.Fprintf(w, "| %-*s ", widths[i], c)
		}
		fmt.Fprintln(w, "|")
	}
	line(rows[0])
	for _, width := range widths {
		fmt.Fprintf(w, "|%s", strings.Repeat("-", width+2))
	}
	fmt.Fprintln(w, "|")
	for _, row := range rows[1:] {
		line(row)
	}
}

// timeline is one Canary's rollout as its Events tell it.
type timeline struct {
	text string // the Events with their offsets from the image change
	// analysis: first step to Promoting; readyWait: new revision to the first step
	// (canary Deployment ready); promoteWait: Promoting to Succeeded (target rolled).
	analysis, readyWait, promoteWait time.Duration
}

// timelines reads the Events of the Canaries names since their image change (from).
func (e *env) timelines(ctx context.Context, b *testing.B, ns string, names []string, from []time.Time) map[string]timeline {
	var list eventsv1.EventList
	if err := e.admin.List(ctx, &list, client.InNamespace(ns)); err != nil {
		b.Logf("timelines: %v", err)
		return nil
	}
	slices.SortFunc(list.Items, func(a, b eventsv1.Event) int { return a.EventTime.Time.Compare(b.EventTime.Time) })
	out := map[string]timeline{}
	for i, name := range names {
		var t timeline
		var s strings.Builder
		var detected, firstStep, promoting, succeeded time.Time
		for _, ev := range list.Items {
			at := ev.EventTime.Time
			if ev.Regarding.Name != name || ev.Regarding.Kind != "Canary" || at.Before(from[i].Add(-time.Second)) {
				continue
			}
			fmt.Fprintf(&s, "\n  +%5.1fs %s: %s", at.Sub(from[i]).Seconds(), ev.Reason, ev.Note)
			switch {
			case ev.Reason == "NewRevision" && detected.IsZero():
				detected = at
			case ev.Reason == "Advance" && firstStep.IsZero():
				firstStep = at
			case ev.Reason == "Promoting" && promoting.IsZero():
				promoting = at
			case ev.Reason == "Succeeded" && succeeded.IsZero():
				succeeded = at
			}
		}
		t.text = s.String()
		if !detected.IsZero() && !firstStep.IsZero() {
			t.readyWait = firstStep.Sub(detected)
		}
		if !firstStep.IsZero() && !promoting.IsZero() {
			t.analysis = promoting.Sub(firstStep)
		}
		if !promoting.IsZero() && !succeeded.IsZero() {
			t.promoteWait = succeeded.Sub(promoting)
		}
		out[name] = t
	}
	return out
}

// rolloutDurations is each app's time from its image change (appliedAt, by index of
// names) to Succeeded (doneAt), and the index of the slowest.
func rolloutDurations(names []string, appliedAt []time.Time, doneAt map[string]time.Time) ([]time.Duration, int) {
	out := make([]time.Duration, len(names))
	slowest := 0
	for j, name := range names {
		out[j] = doneAt[name].Sub(appliedAt[j])
		if out[j] > out[slowest] {
			slowest = j
		}
	}
	return out, slowest
}
