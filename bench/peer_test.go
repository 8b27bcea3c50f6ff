//go:build linux

package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/sandbox"
)

// The peer benchmark's Canary: the seed's analysis at the seed's pace (10 s interval), the
// same object for both controllers but for its apiVersion.
const (
	peerInterval   = 10 * time.Second
	flaggerVersion = "flagger.app/v1beta1"
	peerEnv        = "COALMINE_BENCH_PEER"
)

// peerSizes are the N of BenchmarkPeer: COALMINE_BENCH_SIZES, else 1, 50 and 200.
func peerSizes() []int {
	if os.Getenv("COALMINE_BENCH_SIZES") != "" {
		return canarySizes()
	}
	return []int{1, 50, 200}
}

// peerResult is one controller's figures at one N.
type peerResult struct {
	controller string
	n          int
	// restRSS is the controller's RSS with no Canary: Flagger's process; for coalmine
	// bin/coalmine in a process of its own (measured once, at the environment's start).
	restRSS uint64
	// KiB per canary once all are Initialized: RSS growth of the controller's process
	// (coalmine: this process, after a collection that returned freed pages), and the Go
	// heap in use (coalmine: collected; Flagger: as its /metrics says, uncollected).
	rssPerCanary, heapPerCanary float64
	// Per canary per analysis step (steps of the Canary: maxWeight/stepWeight).
	cpuMs, processCPUms, gets, listsWatches, writes, eventWrites, prom float64
	// rolloutMax is the slowest image change to Succeeded; rolloutP50 the median.
	rolloutP50, rolloutMax time.Duration
	failed                 int
	writesBy               string
	note                   string
}

var peerResults []peerResult

// peerSide is what differs between the two controllers: how to read their process.
type peerSide struct {
	name, apiVersion string
	restRSS          uint64
	// mem reads the controller's memory now: RSS and Go heap in use.
	mem func() (rss, heap uint64)
	// startCPU starts a CPU window; the returned func ends it. processCPU is the CPU time
	// of the controller's whole process so far (coalmine's: with the benchmark driver).
	startCPU   func() func() time.Duration
	processCPU func() time.Duration
	// api counts the controller's apiserver requests; keep picks those about the apps.
	api  *requestCounter
	keep func(ns string) func(reqKey) bool
	// queries counts the controller's Prometheus queries about namespace ns so far.
	queries func(ns string) int64
}

// BenchmarkPeer runs the same N apps with the same Canary once under Flagger v1.36.1
// (flagger.app/v1beta1, Flagger as its own process) and once under coalmine
// (coalmine.dev/v1beta1, in this process as in BenchmarkConcurrentCanaries), in one
// sandbox, and prints each figure for both with the ratio coalmine/Flagger. make
// bench-peer runs it (it builds Flagger on first use, ~3.5 min); make bench skips it.
func BenchmarkPeer(b *testing.B) {
	if os.Getenv(peerEnv) == "" {
		b.Skip("make bench-peer runs it (set " + peerEnv + "=1): it builds Flagger")
	}
	ctx := context.Background()
	fl, err := sandbox.BuildFlagger(ctx, os.Stderr)
	if err != nil {
		b.Fatalf("build Flagger: %v", err)
	}
	extraCRDs = append(extraCRDs, fl.CRDs)
	e := sharedEnv(b)
	for _, o := range sandbox.FlaggerRBAC() {
		if err := e.apply(ctx, o); err != nil {
			b.Fatalf("Flagger's RBAC: %v", err)
		}
	}
	coalmine := peerSide{
		name: "coalmine", apiVersion: v1beta1.GroupVersion.String(), restRSS: e.standalone.rss,
		mem: func() (uint64, uint64) { m := measureMemory(); return m.rss, m.heapInuse },
		startCPU: func() func() time.Duration {
			p := startCPUProfile("peer")
			return func() time.Duration { c, _, _ := p.finish(); return c }
		},
		processCPU: cpuTime,
		api:        e.api,
		keep: func(ns string) func(reqKey) bool {
			return func(k reqKey) bool { return k.namespace == ns }
		},
		queries: func(ns string) int64 { return e.prom.snapshot()[ns] },
	}
	for _, n := range peerSizes() {
		b.Run("N="+strconv.Itoa(n), func(b *testing.B) {
			e.deleteNamespaces(ctx, b)
			f, err := e.startFlagger(ctx, fl.Binary, filepath.Join(e.sb.Dir, "flagger.log"))
			if err != nil {
				b.Fatal(err)
			}
			// At rest: a few seconds after its workers started, no Canary.
			time.Sleep(3 * time.Second)
			flagger := peerSide{
				name: "Flagger " + fl.Version, apiVersion: flaggerVersion, restRSS: f.rss(),
				mem:        func() (uint64, uint64) { return f.rss(), f.heapInuse() },
				startCPU:   func() func() time.Duration { c0 := f.cpu(); return func() time.Duration { return f.cpu() - c0 } },
				processCPU: f.cpu,
				api:        f.api,
				// Flagger names a TrafficRoute after the app alone (no namespace in it).
				keep: func(ns string) func(reqKey) bool {
					return func(k reqKey) bool { return k.namespace == ns || k.resource == "trafficroutes" }
				},
				queries: func(string) int64 { return f.prom.snapshot()["*"] },
			}
			fr := e.runPeer(ctx, b, flagger, n)
			e.deleteFlaggerRoutes(ctx, b, n)
			f.stop()
			e.deleteNamespaces(ctx, b)
			cr := e.runPeer(ctx, b, coalmine, n)
			peerResults = append(peerResults, fr, cr)
			peerLog("Flagger's log: %s", f.logPath)
		})
	}
	printPeerTable()
}

// runPeer initializes n apps under one controller, ships a new image to all at once and
// measures until every Canary finished. A wait that runs out is a note, not a failure.
func (e *env) runPeer(ctx context.Context, b *testing.B, side peerSide, n int) peerResult {
	r := peerResult{controller: side.name, n: n, restRSS: side.restRSS}
	short := "coalmine"
	if side.apiVersion == flaggerVersion {
		short = "flagger"
	}
	ns := fmt.Sprintf("peer-%s-%d", short, n)
	if err := e.createNamespace(ctx, ns, true); err != nil {
		b.Fatal(err)
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("app-%04d", i)
	}
	rss0, heap0 := side.mem()
	start := time.Now()
	err := parallel(n, 8, func(i int) error {
		if err := e.apply(ctx, appDeployment(ns, names[i], image(1))); err != nil {
			return err
		}
		return e.apply(ctx, peerCanary(ns, names[i], side.apiVersion))
	})
	if err != nil {
		b.Fatalf("create apps: %v", err)
	}
	initialized := func(_, phase string) bool { return phase == "Initialized" || phase == "Succeeded" }
	if _, err := e.waitPhases(ctx, side.apiVersion, ns, names, 3*time.Minute+time.Duration(n)*2*time.Second, initialized); err != nil {
		e.keepLogs.Store(true)
		r.note = fmt.Sprintf("not all Initialized within %s: %v", time.Since(start).Round(time.Second), err)
		return r
	}
	peerLog("%s N=%d: initialized in %s", side.name, n, time.Since(start).Round(100*time.Millisecond))
	// Let the initialization's garbage settle as it would between rollouts.
	time.Sleep(5 * time.Second)
	rss1, heap1 := side.mem()
	r.rssPerCanary = kib(int64(rss1)-int64(rss0)) / float64(n)
	r.heapPerCanary = kib(int64(heap1)-int64(heap0)) / float64(n)

	api0, q0 := side.api.snapshot(), side.queries(ns)
	stopCPU, proc0 := side.startCPU(), side.processCPU()
	appliedAt := make([]time.Time, n)
	err = parallel(n, 16, func(j int) error {
		if err := e.apply(ctx, appDeployment(ns, names[j], image(2))); err != nil {
			return err
		}
		appliedAt[j] = time.Now()
		return nil
	})
	if err != nil {
		b.Fatalf("ship: %v", err)
	}
	// Done: the Canary was seen analysing the new revision, then Succeeded or Failed.
	moving := map[string]bool{}
	finished := func(name, phase string) bool {
		switch phase {
		case "", "Initialized", "Succeeded", "Failed":
		default:
			moving[name] = true
		}
		return moving[name] && (phase == "Succeeded" || phase == "Failed")
	}
	doneAt, err := e.waitPhases(ctx, side.apiVersion, ns, names, 10*time.Minute+time.Duration(n)*3*time.Second, finished)
	cpu, proc := stopCPU(), side.processCPU()-proc0
	api := side.api.snapshot().minus(api0).tallyWhere(side.keep(ns))
	queries := side.queries(ns) - q0
	if err != nil {
		e.keepLogs.Store(true)
		r.note = fmt.Sprintf("not all finished within %s of the image change: %v", time.Since(appliedAt[0]).Round(time.Second), err)
		return r
	}
	durations, slowest := rolloutDurations(names, appliedAt, doneAt)
	peerLog("%s N=%d: the slowest, %s, from its image change (its Events; a repeated one at its last time):%s", side.name, n,
		names[slowest], e.eventTimeline(ctx, ns, names[slowest], appliedAt[slowest]))
	slices.Sort(durations)
	r.rolloutP50, r.rolloutMax = durations[len(durations)/2], durations[len(durations)-1]
	intervals := float64(n * steps)
	r.cpuMs = ms(cpu) / intervals
	r.processCPUms = ms(proc) / intervals
	r.gets = float64(api.gets) / intervals
	r.listsWatches = float64(api.listsWatches) / intervals
	r.writes = float64(api.writes) / intervals
	r.eventWrites = float64(api.eventWrites) / intervals
	r.prom = float64(queries) / intervals
	r.writesBy = formatBy(api.by, float64(n), func(k string) bool { return nonEventWrites(k) || getsOnly(k) })

	list := &unstructured.UnstructuredList{}
	list.SetAPIVersion(side.apiVersion)
	list.SetKind("CanaryList")
	if err := e.admin.List(ctx, list, client.InNamespace(ns)); err == nil {
		for _, c := range list.Items {
			if phase, _, _ := unstructured.NestedString(c.Object, "status", "phase"); phase == "Failed" {
				r.failed++
			}
		}
	}
	peerLog("%s N=%d: rollout p50 %s, slowest %s, %d failed; per rollout of one canary: %s", side.name, n,
		r.rolloutP50.Round(100*time.Millisecond), r.rolloutMax.Round(100*time.Millisecond), r.failed, r.writesBy)
	return r
}

// peerCanary is the seed's Canary (appCanary) at a 10 s interval, with the mesh named on
// it as Flagger's Kuma router reads it, under apiVersion.
func peerCanary(ns, name, apiVersion string) *unstructured.Unstructured {
	c := appCanary(ns, name)
	c.Spec.Analysis.Interval = peerInterval.String()
	c.Annotations = map[string]string{v1beta1.AnnotationMesh: meshName}
	m, err := k8sruntime.DefaultUnstructuredConverter.ToUnstructured(c)
	if err != nil {
		panic(fmt.Sprintf("convert Canary: %v", err)) // a static object: cannot fail
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion(apiVersion)
	u.SetKind("Canary")
	return u
}
