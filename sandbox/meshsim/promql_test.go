package meshsim

import (
	"context"
	"math"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/util/annotations"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
)

// The seed's queries, as coalmine's builtins carry them verbatim.
var (
	seedSuccessRate, _ = coalminev1beta1.BuiltinQuery(coalminev1beta1.MetricRequestSuccessRate)
	seedDuration, _    = coalminev1beta1.BuiltinQuery(coalminev1beta1.MetricRequestDuration)
)

// TestSeedPromQL scrapes the simulator each simulated second, as the sandbox's Prometheus
// does, and evaluates the seed's PromQL on the samples with Prometheus' engine.
func TestSeedPromQL(t *testing.T) {
	tests := []struct {
		name        string
		canaryEnv   []corev1.EnvVar
		successRate float64
		p99Ms       float64
	}{
		{name: "good release", canaryEnv: env(EnvLatencyMs, "300"), successRate: 100, p99Ms: 299.5},
		{name: "10% errors", canaryEnv: env(EnvErrorRate, "0.1"), successRate: 90, p99Ms: 24.85},
		{name: "900 ms", canaryEnv: env(EnvLatencyMs, "900"), successRate: 100, p99Ms: 997.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			routes := []*unstructured.Unstructured{newTrafficRoute("alice.apps-a-mesh-a", apex, primary, 50, canary, 50)}
			// The primary is bad and slow: the queries must select the canary only.
			sc := scenario{canaryReady: true, canaryEnv: tt.canaryEnv, primaryEnv: env(EnvErrorRate, "0.5", EnvLatencyMs, "5000")}
			s, clk := newTestSimulator(newFakeClient(t, sc.objects(), routes, nil), nil)

			const seconds = 130
			db := memStorage{}
			for sec := int64(1); sec <= seconds; sec++ {
				tick(t, s, clk, int(time.Second/s.opts.Interval))
				db.add(parseExposition(t, scrape(t, s, "")), sec*1000)
			}
			engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 1_000_000, Timeout: time.Minute})
			t.Cleanup(func() { _ = engine.Close() })

			at := time.Unix(seconds, 0)
			rate, p99 := evalScalar(t, engine, db, seedSuccessRate, at), evalScalar(t, engine, db, seedDuration, at)
			t.Logf("request-success-rate %.3f%%, request-duration %.2f ms", rate, p99)
			if math.Abs(rate-tt.successRate) > 0.5 {
				t.Errorf("request-success-rate = %.2f, want %.2f", rate, tt.successRate)
			}
			if math.Abs(p99-tt.p99Ms) > 1 {
				t.Errorf("request-duration = %.2f ms, want %.2f", p99, tt.p99Ms)
			}
		})
	}
}

func evalScalar(t *testing.T, engine *promql.Engine, db storage.Queryable, tmpl string, at time.Time) float64 {
	t.Helper()
	q := strings.NewReplacer(`{{ if zone }} zone="{{ zone }}",{{ end }}`, "", "{{ target }}", "alice", "{{ service }}", "alice", "{{ namespace }}", ns, "{{ interval }}", "1m").Replace(tmpl)
	qry, err := engine.NewInstantQuery(context.Background(), db, nil, q, at)
	if err != nil {
		t.Fatalf("query %s: %v", q, err)
	}
	res := qry.Exec(context.Background())
	if res.Err != nil {
		t.Fatalf("exec %s: %v", q, res.Err)
	}
	vec, err := res.Vector()
	if err != nil || len(vec) != 1 {
		t.Fatalf("%s = %v (%v), want one sample", q, res.Value, err)
	}
	return vec[0].F
}

// memStorage holds float samples by series, enough for the engine to query: classic
// histograms are stored as Prometheus stores them, as _bucket{le}, _sum and _count series.
type memStorage map[string]*memSeries

type memSeries struct {
	lset    labels.Labels
	samples []chunks.Sample
}

func (db memStorage) add(families map[string]*dto.MetricFamily, ts int64) {
	for name, f := range families {
		for _, m := range f.GetMetric() {
			base := labelsOf(m)
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				db.append(name, base, nil, ts, m.GetCounter().GetValue())
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					db.append(name+"_bucket", base, []string{"le", strconv.FormatFloat(b.GetUpperBound(), 'f', -1, 64)}, ts, float64(b.GetCumulativeCount()))
				}
				db.append(name+"_bucket", base, []string{"le", "+Inf"}, ts, float64(h.GetSampleCount()))
				db.append(name+"_sum", base, nil, ts, h.GetSampleSum())
				db.append(name+"_count", base, nil, ts, float64(h.GetSampleCount()))
			}
		}
	}
}

func (db memStorage) append(name string, base map[string]string, extra []string, ts int64, v float64) {
	b := labels.NewBuilder(labels.EmptyLabels()).Set(labels.MetricName, name)
	for k, val := range base {
		b.Set(k, val)
	}
	for i := 0; i < len(extra); i += 2 {
		b.Set(extra[i], extra[i+1])
	}
	lset := b.Labels()
	key := lset.String()
	if db[key] == nil {
		db[key] = &memSeries{lset: lset}
	}
	db[key].samples = append(db[key].samples, floatSample{t: ts, f: v})
}

func (db memStorage) Querier(_, _ int64) (storage.Querier, error) {
	return &storage.MockQuerier{SelectMockFunction: func(_ bool, _ *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
		var out []storage.Series
		for _, s := range db {
			if matchesAll(s.lset, ms) {
				out = append(out, storage.NewListSeries(s.lset, s.samples))
			}
		}
		sort.Slice(out, func(i, j int) bool { return labels.Compare(out[i].Labels(), out[j].Labels()) < 0 })
		return &listSeriesSet{series: out, i: -1}
	}}, nil
}

func matchesAll(lset labels.Labels, ms []*labels.Matcher) bool {
	for _, m := range ms {
		if !m.Matches(lset.Get(m.Name)) {
			return false
		}
	}
	return true
}

type listSeriesSet struct {
	series []storage.Series
	i      int
}

func (s *listSeriesSet) Next() bool                      { s.i++; return s.i < len(s.series) }
func (s *listSeriesSet) At() storage.Series              { return s.series[s.i] }
func (*listSeriesSet) Err() error                        { return nil }
func (*listSeriesSet) Warnings() annotations.Annotations { return nil }

type floatSample struct {
	t int64
	f float64
}

func (s floatSample) T() int64                    { return s.t }
func (floatSample) ST() int64                     { return 0 }
func (s floatSample) F() float64                  { return s.f }
func (floatSample) H() *histogram.Histogram       { return nil }
func (floatSample) FH() *histogram.FloatHistogram { return nil }
func (floatSample) Type() chunkenc.ValueType      { return chunkenc.ValFloat }
func (s floatSample) Copy() chunks.Sample         { return s }
