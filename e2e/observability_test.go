package e2e

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/cmd/coalmine/app"
	"github.com/coalmine-dev/coalmine/cmd/coalmine/demo"
	"github.com/coalmine-dev/coalmine/manifests"
	"github.com/coalmine-dev/coalmine/sandbox/meshsim"
)

// The shared coalmine serves /metrics and the web view on addresses fixed for the whole
// run, so a restarted one serves where the zone Prometheus scrapes and the browser looks.
const coalmineJob = "coalmine"

type observabilityAddrs struct{ metrics, web string }

var coalmineAddrs = sync.OnceValues(func() (observabilityAddrs, error) {
	p, err := demo.FreePorts(2)
	if err != nil {
		return observabilityAddrs{}, err
	}
	return observabilityAddrs{metrics: "127.0.0.1:" + strconv.Itoa(p[0]), web: "127.0.0.1:" + strconv.Itoa(p[1])}, nil
})

// withObservability is the shared coalmine's options: /metrics and the web view on.
func withObservability(o *app.Options) {
	a, err := coalmineAddrs()
	if err != nil {
		panic(err) // a free port always exists on the loopback
	}
	o.MetricsBindAddress, o.WebAddress = a.metrics, a.web
}

// scrapeCoalmine has the sandbox's zone Prometheus scrape the shared coalmine's /metrics,
// as a cluster's Prometheus scrapes the pod: the series reach main by remote write.
func scrapeCoalmine(ctx context.Context) error {
	a, err := coalmineAddrs()
	if err != nil {
		return err
	}
	if err := sb.AddScrapeTarget(ctx, coalmineJob, a.metrics); err != nil {
		return fmt.Errorf("scrape coalmine's metrics: %w", err)
	}
	return nil
}

func mainPrometheus(t *testing.T) promv1.API {
	t.Helper()
	c, err := promapi.NewClient(promapi.Config{Address: sb.PrometheusURL})
	if err != nil {
		t.Fatalf("Prometheus client: %v", err)
	}
	return promv1.NewAPI(c)
}

// series is what one query returned: its series' labels and their non-NaN values.
type series struct {
	labels model.Metric
	values []float64
}

func queryRange(ctx context.Context, api promv1.API, q string, from, to time.Time) ([]series, error) {
	v, _, _, err := api.QueryRange(ctx, q, promv1.Range{Start: from, End: to, Step: time.Second})
	if err != nil {
		return nil, err
	}
	m, ok := v.(model.Matrix)
	if !ok {
		return nil, fmt.Errorf("range query returned %s", v.Type())
	}
	var out []series
	for _, s := range m {
		var vals []float64
		for _, p := range s.Values {
			if f := float64(p.Value); !math.IsNaN(f) && !math.IsInf(f, 0) {
				vals = append(vals, f)
			}
		}
		if len(vals) > 0 {
			out = append(out, series{labels: s.Metric, values: vals})
		}
	}
	return out, nil
}

func queryInstant(ctx context.Context, api promv1.API, q string, at time.Time) ([]series, error) {
	v, _, _, err := api.Query(ctx, q, at)
	if err != nil {
		return nil, err
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("instant query returned %s", v.Type())
	}
	var out []series
	for _, s := range vec {
		if f := float64(s.Value); !math.IsNaN(f) {
			out = append(out, series{labels: s.Metric, values: []float64{f}})
		}
	}
	return out, nil
}

func maxOf(ss []series) float64 {
	m := math.Inf(-1)
	for _, s := range ss {
		for _, v := range s.values {
			m = math.Max(m, v)
		}
	}
	return m
}

func minOf(ss []series) float64 {
	m := math.Inf(1)
	for _, s := range ss {
		for _, v := range s.values {
			m = math.Min(m, v)
		}
	}
	return m
}

func hasLabel(ss []series, name, value string) bool {
	for _, s := range ss {
		if string(s.labels[model.LabelName(name)]) == value {
			return true
		}
	}
	return false
}

// TestDashboardQueriesHaveData runs a good release (promoted) and a bad one (rolled back)
// and then every query of the Grafana dashboard against the sandbox's main Prometheus, as
// Grafana runs them for this Canary over the time of the two rollouts: each must return
// data, and what matters must be what happened (the weights went to 50, both outcomes
// were counted, the bad canary's success rate fell under the threshold while primary's
// did not). The alerting rules are evaluated too: the rollback alert fires, the stall
// alert does not.
func TestDashboardQueriesHaveData(t *testing.T) {
	t.Parallel()
	env := sharedRollout(t)
	s := newScenario(t, env, scenarioOptions{})
	s.deploy()
	start := time.Now()
	s.ship(imageV2, nil)
	s.waitPhase(coalminev1beta1.PhaseSucceeded, 3*time.Minute)
	// Prometheus samples the phase each second: a phase shorter than that may never be
	// scraped. Succeeded lasts until the next release, so the bad one waits until main
	// has seen it (as it would in a cluster, where releases are minutes apart).
	api := mainPrometheus(t)
	succeeded := fmt.Sprintf(`coalmine_canary_phase{namespace=%q, name=%q, phase="Succeeded"}`, s.ns, appName)
	waitFor(t, 30*time.Second, func(ctx context.Context) (bool, error) {
		ss, err := queryInstant(ctx, api, succeeded, time.Now())
		if err != nil || len(ss) == 0 {
			return false, fmt.Errorf("main Prometheus has no %s yet: %v", succeeded, err)
		}
		return true, nil
	})
	s.ship(imageV3, map[string]string{meshsim.EnvErrorRate: "0.2"})
	s.waitPhase(coalminev1beta1.PhaseFailed, 2*time.Minute)
	values := map[string]string{
		"datasource": "prometheus", "namespace": s.ns, "canary": appName, "service": appName,
		"__rate_interval": "30s", "__interval": "15s",
	}
	queries, err := manifests.DashboardQueries(manifests.GrafanaDashboard)
	if err != nil {
		t.Fatal(err)
	}
	// What each panel must show beyond "some data", keyed by panel and refId.
	checks := map[string]func(ss []series) error{
		"Traffic split/A": func(ss []series) error {
			return want(maxOf(ss) == 50, "canary weight peaked at %v, want 50", maxOf(ss))
		},
		"Traffic split/B": func(ss []series) error { return want(minOf(ss) == 50, "primary weight fell to %v, want 50", minOf(ss)) },
		"Phase over time/A": func(ss []series) error {
			return want(hasLabel(ss, "phase", "Progressing") && hasLabel(ss, "phase", "Succeeded") && hasLabel(ss, "phase", "Failed"),
				"phases %v, want Progressing, Succeeded and Failed", ss)
		},
		"Success rate: primary vs canary (Envoy)/A": func(ss []series) error {
			return want(minOf(ss) >= 99, "primary's success rate fell to %v, want >= 99 (primary ran good releases only)", minOf(ss))
		},
		"Success rate: primary vs canary (Envoy)/B": func(ss []series) error {
			return want(minOf(ss) < 99 && maxOf(ss) == 100, "canary success rate in [%v, %v], want 100 for the good release and < 99 for the bad", minOf(ss), maxOf(ss))
		},
		"p99 latency: primary vs canary (Envoy)/B": func(ss []series) error {
			return want(maxOf(ss) > 0, "canary p99 %v, want > 0", maxOf(ss))
		},
		"Analysis: metrics against thresholds/A": func(ss []series) error {
			return want(hasLabel(ss, "metric", coalminev1beta1.MetricRequestSuccessRate) && hasLabel(ss, "metric", coalminev1beta1.MetricRequestDuration),
				"analysis values %v, want both builtin metrics", ss)
		},
		"Analysis: metrics against thresholds/B": func(ss []series) error {
			return want(len(ss) == 2 && minOf(ss) == 99 && maxOf(ss) == 500, "thresholds %v, want the seed's 99 (min) and 500 (max)", ss)
		},
		"Failed checks/A": func(ss []series) error {
			return want(maxOf(ss) == 5, "failed checks peaked at %v, want the threshold 5", maxOf(ss))
		},
		"Failed checks/B": func(ss []series) error { return want(minOf(ss) == 5, "threshold %v, want 5", minOf(ss)) },
		"Checks by outcome/A": func(ss []series) error {
			return want(hasLabel(ss, "outcome", "Passed") && hasLabel(ss, "outcome", "Failed"), "outcomes %v, want Passed and Failed", ss)
		},
		"Promotions and rollbacks over time/A": func(ss []series) error { return want(maxOf(ss) > 0, "no promotion counted") },
		"Promotions and rollbacks over time/B": func(ss []series) error { return want(maxOf(ss) > 0, "no rollback counted") },
		"Promotions in range/A":                func(ss []series) error { return want(math.Round(maxOf(ss)) == 1, "promotions %v, want 1", maxOf(ss)) },
		"Rollbacks in range/A":                 func(ss []series) error { return want(math.Round(maxOf(ss)) == 1, "rollbacks %v, want 1", maxOf(ss)) },
		"Phase/A":                              func(ss []series) error { return want(hasLabel(ss, "phase", "Failed"), "phase now %v, want Failed", ss) },
		"variable namespace/namespace":         func(ss []series) error { return want(hasLabel(ss, "namespace", s.ns), "no Canary in %s", s.ns) },
		"variable canary/canary":               func(ss []series) error { return want(hasLabel(ss, "name", appName), "no Canary %s", appName) },
		"variable service/service":             func(ss []series) error { return want(hasLabel(ss, "service", appName), "no service label %s", appName) },
	}
	// The last samples reach main after the remote-write lag (~3-5 s); all must be there
	// within a bound.
	var failures map[string]string
	waitFor(t, time.Minute, func(ctx context.Context) (bool, error) {
		failures = map[string]string{}
		now := time.Now()
		values["__range"] = strconv.Itoa(int(now.Sub(start).Seconds())+5) + "s"
		for _, q := range queries {
			id := q.Panel + "/" + q.RefID
			expr, missing := manifests.ExpandVariables(q.Expr, values)
			if len(missing) > 0 {
				t.Fatalf("%s: variables %v not set by the test", id, missing)
			}
			var ss []series
			var err error
			if q.Instant {
				ss, err = queryInstant(ctx, api, expr, now)
			} else {
				ss, err = queryRange(ctx, api, expr, start, now)
			}
			switch {
			case err != nil:
				failures[id] = fmt.Sprintf("%s: %v", expr, err)
			case len(ss) == 0:
				failures[id] = fmt.Sprintf("no data for %s", expr)
			case checks[id] != nil:
				if err := checks[id](ss); err != nil {
					failures[id] = err.Error()
				}
			}
		}
		if len(failures) > 0 {
			return false, fmt.Errorf("%d of %d dashboard queries not as wanted: %v", len(failures), len(queries), failures)
		}
		return true, nil
	})
	t.Logf("all %d dashboard queries returned data for %s/%s", len(queries), s.ns, appName)

	rolledBack, stalled := alertExprs(t)
	waitFor(t, 30*time.Second, func(ctx context.Context) (bool, error) {
		ss, err := queryInstant(ctx, api, rolledBack, time.Now())
		if err != nil || !hasLabel(ss, "namespace", s.ns) {
			return false, fmt.Errorf("CoalmineCanaryRolledBack does not fire for %s/%s: %v %v", s.ns, appName, ss, err)
		}
		return true, nil
	})
	if ss, err := queryInstant(s.ctx, api, stalled, time.Now()); err != nil || hasLabel(ss, "namespace", s.ns) {
		t.Errorf("CoalmineCanaryStalled fires for %s/%s, which never stalled: %v %v", s.ns, appName, ss, err)
	}
}

// TestAlertCanaryStalled: a Canary held at a closed confirm-rollout gate longer than its
// progressDeadlineSeconds makes the stall alert's expression return it.
func TestAlertCanaryStalled(t *testing.T) {
	t.Parallel()
	env := sharedRollout(t)
	gate := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not approved", http.StatusForbidden)
	}))
	t.Cleanup(gate.Close)
	s := newScenario(t, env, scenarioOptions{webhooks: []any{
		map[string]any{"name": "release-manager", "type": "confirm-rollout", "url": gate.URL},
	}})
	s.canary = recordCanary(t, s.ctx, watchClient(t, sb.Config), s.ns, appName)
	s.route = s.recordRoute(s.routes, s.routesLabel)
	apply(t, s.release(imageV1, nil))
	c := s.seedCanary()
	const deadline = 5
	if err := unstructured.SetNestedField(c.Object, int64(deadline), "spec", "progressDeadlineSeconds"); err != nil {
		t.Fatal(err)
	}
	apply(t, c)
	s.waitPhase(coalminev1beta1.PhaseInitialized, time.Minute)
	s.ship(imageV2, nil)
	waiting := time.Now()
	s.waitPhase(coalminev1beta1.PhaseWaiting, time.Minute)

	api := mainPrometheus(t)
	_, stalled := alertExprs(t)
	waitFor(t, time.Minute, func(ctx context.Context) (bool, error) {
		ss, err := queryInstant(ctx, api, stalled, time.Now())
		if err != nil || !hasLabel(ss, "namespace", s.ns) {
			return false, fmt.Errorf("CoalmineCanaryStalled's expression does not return %s/%s yet: %v %v", s.ns, appName, ss, err)
		}
		return true, nil
	})
	if d := time.Since(waiting); d < deadline*time.Second {
		t.Errorf("stalled after %s in Waiting, before its %ds deadline", d.Round(time.Millisecond), deadline)
	}
	if p := s.canary.latest().Status.Phase; p != coalminev1beta1.PhaseWaiting {
		t.Errorf("phase %s, want Waiting still (the gate is closed)", p)
	}
}

// alertExprs are the expressions of the shipped alerting rules.
func alertExprs(t *testing.T) (rolledBack, stalled string) {
	t.Helper()
	var file struct {
		Groups []struct {
			Rules []struct {
				Alert string `json:"alert"`
				Expr  string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(manifests.AlertRules, &file); err != nil {
		t.Fatal(err)
	}
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			switch r.Alert {
			case "CoalmineCanaryRolledBack":
				rolledBack = r.Expr
			case "CoalmineCanaryStalled":
				stalled = r.Expr
			}
		}
	}
	if rolledBack == "" || stalled == "" {
		t.Fatal("the shipped rules lack CoalmineCanaryRolledBack or CoalmineCanaryStalled")
	}
	return rolledBack, stalled
}

func want(ok bool, format string, a ...any) error {
	if ok {
		return nil
	}
	return fmt.Errorf(format, a...)
}
