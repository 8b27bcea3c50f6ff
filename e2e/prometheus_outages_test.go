package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/sandbox/meshsim"
)

// Each failure of the two Prometheus tiers on its own, mid-analysis (issue 16). Coalmine
// queries main only, so what it can tell apart is: main down (the query fails: Error) and
// everything that stops samples reaching main while main answers (zone down, link cut:
// NoData once the metric's window holds no sample).
//
// Main keeps answering from the window's older samples for a while after the samples stop,
// and at the e2e interval (3s) the seed's windows (1m, 30s) span many steps. So the canary
// is held at its maximum weight by a closed confirm-promotion gate before the failure,
// and the outcome does not depend on how many steps fit in the window. These tests stop
// shared servers, so they never run in parallel with anything.

// heldMaxWeight is the held scenarios' maxWeight: two steps of the seed's 5, so the
// canary reaches the gate quickly.
const heldMaxWeight = 10

// TestPrometheusTiersMainDown: main stops; every query fails, each check is an Error,
// and at the threshold the release is rolled back saying "query error". The zone keeps
// queueing meanwhile: once main is back, it has the samples of the outage.
func TestPrometheusTiersMainDown(t *testing.T) {
	h := holdAtMaxWeight(t, 5)
	restart := h.restartAtCleanup(func(ctx context.Context) error { return sb.StartMainPrometheus(ctx) })
	down := time.Now()
	if err := sb.StopMainPrometheus(); err != nil {
		t.Fatalf("stop main Prometheus: %v", err)
	}
	c := h.waitPhase(coalminev1beta1.PhaseFailed, 2*time.Minute)
	up := time.Now()
	restart()

	if !strings.Contains(c.Status.Message, "query error") {
		t.Errorf("message %q, want it to say the query failed", c.Status.Message)
	}
	h.expectChecksSince(down, coalminev1beta1.MetricError)
	expectOutcome(t, c, coalminev1beta1.MetricRequestSuccessRate, coalminev1beta1.MetricError)
	expectOutcome(t, c, coalminev1beta1.MetricRequestDuration, coalminev1beta1.MetricError)
	h.expectRolledBack(c, h.v2, imageV1)
	h.expectSamplesOnMain(down, up)
}

// TestPrometheusTiersZoneDown: the zone Prometheus stops, main answers. Checks pass on the
// window's older samples until the request-duration window (30s) is empty, then each is
// NoData, and at the threshold the release is rolled back saying "no data"; no query fails.
func TestPrometheusTiersZoneDown(t *testing.T) {
	h := holdAtMaxWeight(t, 5)
	zone := sb.Zone()
	restart := h.restartAtCleanup(zone.Start)
	down := time.Now()
	if err := zone.Stop(); err != nil {
		t.Fatalf("stop the zone Prometheus: %v", err)
	}
	c := h.waitPhase(coalminev1beta1.PhaseFailed, 2*time.Minute)
	restart()
	h.expectNoData(c, down)
}

// TestPrometheusTiersLinkBroken: the remote-write link is cut while both servers run. The
// zone still scrapes (its own series stay fresh), main gets nothing: the same outcome as a
// zone outage, NoData after the window, rolled back saying "no data".
func TestPrometheusTiersLinkBroken(t *testing.T) {
	h := holdAtMaxWeight(t, 5)
	zone := sb.Zone()
	h.restartAtCleanup(func(context.Context) error { zone.RestoreLink(); return nil })
	_, droppedBefore := zone.LinkRequests()
	cut := time.Now()
	zone.CutLink()
	c := h.waitPhase(coalminev1beta1.PhaseFailed, 2*time.Minute)

	ctx := testContext(t, time.Minute)
	fresh := fmt.Sprintf(`time() - max(timestamp(envoy_cluster_upstream_rq{envoy_cluster_name=%q}))`, h.canaryTag())
	if age := queryValue(t, ctx, promClient(t, zone.URL()), fresh); !(age < 5) {
		t.Errorf("the zone's newest canary sample is %vs old, want fresh: the zone kept scraping", age)
	}
	if _, dropped := zone.LinkRequests(); dropped == droppedBefore {
		t.Errorf("the link dropped no write while cut")
	}
	zone.RestoreLink()
	h.expectNoData(c, cut)
}

// TestPrometheusTiersLinkRecovers: the link is cut until the analysis sees no data, then
// the gate opens while it is still cut: nothing is promoted on the missing samples. Once
// the link is mended the zone delivers its backlog, the checks pass again and the release
// is promoted. The seed's threshold of 5 would leave no room for the outage's NoData checks
// and the backlog's catch-up (a few more, at a 3s interval), so this Canary allows 10.
func TestPrometheusTiersLinkRecovers(t *testing.T) {
	h := holdAtMaxWeight(t, 10)
	zone := sb.Zone()
	h.restartAtCleanup(func(context.Context) error { zone.RestoreLink(); return nil })
	cut := time.Now()
	zone.CutLink()
	gap := h.awaitCheck(cut, "a check without data", func(ch check) bool { return ch.has(coalminev1beta1.MetricNoData) })
	t.Logf("cut -> first check without data: %s (%d checks passed on older samples meanwhile)",
		gap.at.Sub(cut).Round(time.Second), h.countChecks(cut, gap.at, check.allPassed))

	h.gate.Store(true)
	opened := time.Now()
	h.awaitCheck(opened, "a check after the gate opened", func(check) bool { return true })
	if p := h.canary.latest().Status.Phase; p != coalminev1beta1.PhaseProgressing {
		t.Fatalf("phase %s with the link still cut, want Progressing: promoted or failed without data\n%s", p, h.describe())
	}
	restored := time.Now()
	zone.RestoreLink()
	c := h.waitPhase(coalminev1beta1.PhaseSucceeded, 2*time.Minute)

	passed := h.awaitCheck(restored, "a passing check after the link mended", check.allPassed)
	t.Logf("link mended -> first passing check: %s", passed.at.Sub(restored).Round(time.Second))
	if got := h.countChecks(opened, restored, check.allPassed); got != 0 {
		t.Errorf("%d checks passed between the gate opening and the link mending, want none (no samples arrived)", got)
	}
	if phases := h.canary.phases(); slices.Contains(phases, coalminev1beta1.PhaseFailed) {
		t.Errorf("phases %v, want no failure", phases)
	}
	h.expectPromoted(c, h.v2)
	h.expectSamplesOnMain(cut, restored)
}

// held is a rollout of a good v2 held at heldMaxWeight by a closed confirm-promotion gate,
// with every analysis check recorded.
type held struct {
	*scenario
	gate   *atomic.Bool // true opens the gate
	v2     *appsv1.Deployment
	checks *checkRecorder
}

// holdAtMaxWeight deploys alice with the seed's Canary (maxWeight heldMaxWeight, the given
// threshold, a confirm-promotion gate), ships v2 and waits until its analysis passes at
// the maximum weight and waits for the gate.
func holdAtMaxWeight(t *testing.T, threshold int) *held {
	env := sharedRollout(t)
	gate := &atomic.Bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !gate.Load() {
			http.Error(w, "held by the test", http.StatusForbidden)
		}
	}))
	t.Cleanup(srv.Close)
	s := newScenario(t, env, scenarioOptions{webhooks: []any{
		map[string]any{"name": "hold", "type": string(coalminev1beta1.ConfirmPromotionHook), "url": srv.URL},
	}})
	h := &held{scenario: s, gate: gate}

	s.canary = recordCanary(t, s.ctx, watchClient(t, sb.Config), s.ns, appName)
	s.route = s.recordRoute(s.routes, s.routesLabel)
	h.checks = recordChecks(t, s.ctx, s.ns)
	apply(t, s.release(imageV1, nil))
	canary := s.seedCanary()
	for field, v := range map[string]int64{"maxWeight": heldMaxWeight, "threshold": int64(threshold)} {
		if err := unstructured.SetNestedField(canary.Object, v, "spec", "analysis", field); err != nil {
			t.Fatalf("set %s: %v", field, err)
		}
	}
	apply(t, canary)
	s.waitPhase(coalminev1beta1.PhaseInitialized, time.Minute)
	h.v2 = s.ship(imageV2, nil)
	s.await(2*time.Minute, "analysis passed at the maximum weight, held by the gate", func(context.Context) (bool, error) {
		c := s.canary.latest()
		if c == nil || c.Status.CanaryWeight != heldMaxWeight || !strings.Contains(c.Status.Message, "waits for approval") {
			return false, errors.New("not held yet")
		}
		return true, nil
	})
	first := h.checks.atWeight(stepsUpTo(heldMaxWeight)[0])
	t.Logf("first step (weight %d): %d checks, %d without data (remote-write lag)", stepsUpTo(heldMaxWeight)[0], len(first), countWith(first, coalminev1beta1.MetricNoData))
	return h
}

func (h *held) canaryTag() string {
	return meshsim.Tag(appName+coalminev1beta1.CanarySuffix, h.ns, 8080)
}

// restartAtCleanup runs start (bounded, and awaiting the simulator's target again) once:
// when called, or when the test ends. It returns the call.
func (h *held) restartAtCleanup(start func(context.Context) error) func() {
	var once sync.Once
	restart := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := start(ctx); err != nil {
				h.t.Errorf("restart: %v", err)
				return
			}
			// The scenarios after this one need the simulator scraped again.
			if err := sb.AddScrapeTarget(ctx, simulatorJob, h.env.simAddr()); err != nil {
				h.t.Errorf("scrape the simulator again: %v", err)
			}
		})
	}
	h.t.Cleanup(restart)
	return restart
}

// expectNoData checks a rollback caused by samples no longer reaching main after since:
// "no data", no query error, request-duration (the shorter window) without data.
func (h *held) expectNoData(c *coalminev1beta1.Canary, since time.Time) {
	h.t.Helper()
	if !strings.Contains(c.Status.Message, "no data") {
		h.t.Errorf("message %q, want it to say there was no data", c.Status.Message)
	}
	if n := h.countChecks(since, time.Now(), func(ch check) bool { return ch.has(coalminev1beta1.MetricError) }); n != 0 {
		h.t.Errorf("%d checks had a query error, want none: main answered throughout", n)
	}
	expectOutcome(h.t, c, coalminev1beta1.MetricRequestDuration, coalminev1beta1.MetricNoData)
	gap := h.awaitCheck(since, "a check without data", func(ch check) bool { return ch.has(coalminev1beta1.MetricNoData) })
	h.t.Logf("samples stopped -> first check without data: %s (%d checks passed on older samples meanwhile)",
		gap.at.Sub(since).Round(time.Second), h.countChecks(since, gap.at, check.allPassed))
	h.expectRolledBack(c, h.v2, imageV1)
}

// expectChecksSince checks that every check after since had the outcome want for all
// metrics. A check seen within a second of since may have queried before it.
func (h *held) expectChecksSince(since time.Time, want coalminev1beta1.MetricOutcome) {
	h.t.Helper()
	for _, ch := range h.checks.since(since.Add(time.Second)) {
		for m, o := range ch.outcomes {
			if o != want {
				h.t.Errorf("check at %s: %s %s, want %s", ch.at.Format(time.TimeOnly), m, o, want)
			}
		}
	}
}

// expectSamplesOnMain checks that main holds the canary's samples scraped in (from, to],
// delivered late: at least one a second for half the span (the rest may be in flight).
func (h *held) expectSamplesOnMain(from, to time.Time) {
	h.t.Helper()
	span := to.Sub(from).Round(time.Second)
	q := fmt.Sprintf(`max(count_over_time(envoy_cluster_upstream_rq{envoy_cluster_name=%q}[%ds] @ %d))`, h.canaryTag(), int(span.Seconds()), to.Unix())
	want := span.Seconds() / 2
	main := promClient(h.t, sb.PrometheusURL)
	h.await(time.Minute, "the zone's samples of the outage on main", func(ctx context.Context) (bool, error) {
		vec, err := tryVector(ctx, main, q)
		if err != nil {
			return false, err
		}
		if len(vec) == 0 || float64(vec[0].Value) < want {
			return false, fmt.Errorf("%s = %v, want >= %v", q, vec, want)
		}
		return true, nil
	})
}

// awaitCheck waits for the first check seen after since that satisfies ok.
func (h *held) awaitCheck(since time.Time, what string, ok func(check) bool) check {
	h.t.Helper()
	var found check
	h.await(2*time.Minute, what, func(context.Context) (bool, error) {
		for _, ch := range h.checks.since(since) {
			if ok(ch) {
				found = ch
				return true, nil
			}
		}
		return false, fmt.Errorf("checks since %s: %v", since.Format(time.TimeOnly), h.checks.since(since))
	})
	return found
}

// countChecks counts the checks seen in (from, to) that satisfy ok.
func (h *held) countChecks(from, to time.Time, ok func(check) bool) int {
	n := 0
	for _, ch := range h.checks.since(from) {
		if ch.at.Before(to) && ok(ch) {
			n++
		}
	}
	return n
}

// check is one analysis round as the Canary's status reported it.
type check struct {
	at       time.Time // when the watch saw it
	weight   int
	failed   int
	phase    coalminev1beta1.CanaryPhase
	outcomes map[string]coalminev1beta1.MetricOutcome
}

func (c check) has(o coalminev1beta1.MetricOutcome) bool {
	for _, got := range c.outcomes {
		if got == o {
			return true
		}
	}
	return false
}

func (c check) allPassed() bool {
	for _, got := range c.outcomes {
		if got != coalminev1beta1.MetricPassed {
			return false
		}
	}
	return len(c.outcomes) > 0
}

func (c check) String() string {
	return fmt.Sprintf("%s w=%d failed=%d %s %v", c.at.Format(time.TimeOnly), c.weight, c.failed, c.phase, c.outcomes)
}

func countWith(checks []check, o coalminev1beta1.MetricOutcome) int {
	n := 0
	for _, ch := range checks {
		if ch.has(o) {
			n++
		}
	}
	return n
}

// checkRecorder keeps every analysis round of one Canary: a new round is a new
// (revision, iterations) in its status.
type checkRecorder struct {
	mu     sync.Mutex
	last   string
	checks []check
}

func recordChecks(t *testing.T, ctx context.Context, ns string) *checkRecorder {
	r := &checkRecorder{}
	watchNamed(t, ctx, watchClient(t, sb.Config), &coalminev1beta1.CanaryList{}, ns, appName, func(obj k8sruntime.Object, typ watch.EventType) {
		if typ != watch.Deleted {
			r.observe(obj.(*coalminev1beta1.Canary))
		}
	})
	return r
}

func (r *checkRecorder) observe(c *coalminev1beta1.Canary) {
	st := c.Status
	key := fmt.Sprintf("%s/%d", st.CanaryRevision, st.Iterations)
	r.mu.Lock()
	defer r.mu.Unlock()
	if st.Iterations == 0 || key == r.last {
		return
	}
	r.last = key
	ch := check{at: time.Now(), weight: st.CanaryWeight, failed: st.FailedChecks, phase: st.Phase, outcomes: map[string]coalminev1beta1.MetricOutcome{}}
	for _, m := range st.Metrics {
		ch.outcomes[m.Name] = m.Outcome
	}
	r.checks = append(r.checks, ch)
}

// since returns the checks seen after t.
func (r *checkRecorder) since(t time.Time) []check {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []check
	for _, ch := range r.checks {
		if ch.at.After(t) {
			out = append(out, ch)
		}
	}
	return out
}

// atWeight returns the checks run at canary weight w.
func (r *checkRecorder) atWeight(w int) []check {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []check
	for _, ch := range r.checks {
		if ch.weight == w {
			out = append(out, ch)
		}
	}
	return out
}
