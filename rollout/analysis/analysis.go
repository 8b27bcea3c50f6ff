package analysis

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// Result is the outcome of one metric check.
type Result struct {
	Metric  string
	Value   float64 // math.NaN() when there is none
	Outcome v1beta1.MetricOutcome
	// Message explains the outcome, e.g. "request-success-rate 87.5 < 99",
	// "no values found for ..." or the query error.
	Message string
}

// Analyzer runs a Canary's metric checks.
type Analyzer interface {
	// Run evaluates every metric of c.Spec.Analysis once, for the canary revision.
	Run(ctx context.Context, c *v1beta1.Canary) []Result
}

// Prometheus is the Analyzer for Prometheus-compatible servers.
type Prometheus struct {
	reader   client.Reader
	defaults ProviderConfig
	clients  clients
}

var _ Analyzer = (*Prometheus)(nil)

// New returns an Analyzer that reads MetricTemplates and provider Secrets with reader and
// queries defaults.Address (--metrics-server) unless a Canary or template says otherwise.
func New(reader client.Reader, defaults ProviderConfig) *Prometheus {
	return &Prometheus{reader: reader, defaults: defaults}
}

// Run evaluates every metric of c.Spec.Analysis once, in order.
func (p *Prometheus) Run(ctx context.Context, c *v1beta1.Canary) []Result {
	if c.Spec.Analysis == nil {
		return nil
	}
	// The queries run at once: a pass waits for the slowest, not for their sum, which
	// keeps the steps on time when Prometheus is slow or hundreds of Canaries ask.
	results := make([]Result, len(c.Spec.Analysis.Metrics))
	var wg sync.WaitGroup
	for i := range c.Spec.Analysis.Metrics {
		wg.Go(func() {
			r := p.runMetric(ctx, c, &c.Spec.Analysis.Metrics[i])
			log.FromContext(ctx).V(1).Info("metric checked", "metric", r.Metric, "outcome", r.Outcome, "value", r.Value, "message", r.Message)
			results[i] = r
		})
	}
	wg.Wait()
	return results
}

// metricKind says which way a threshold points.
type metricKind int

const (
	kindTemplate    metricKind = iota // fails above threshold (Flagger's custom metrics)
	kindSuccessRate                   // fails below threshold, percent
	kindDuration                      // fails above threshold, milliseconds
)

// check is a metric made ready to run: its rendered query, where it goes and which way
// its threshold points.
type check struct {
	query string
	kind  metricKind
	ep    endpoint
	// traffic is the rendered denominator of a builtin ratio, "" for other metrics: it
	// tells "no traffic" from "no non-5xx responses" when the ratio is empty.
	traffic string
}

func (p *Prometheus) runMetric(ctx context.Context, c *v1beta1.Canary, m *v1beta1.CanaryMetric) Result {
	chk, err := p.prepare(ctx, c, m)
	if err != nil {
		return errorResult(m.Name, err.Error())
	}
	value, err := p.clients.query(ctx, chk.ep, chk.query)
	switch {
	case errors.Is(err, errNoValues):
		return p.noValues(ctx, m, chk)
	case err != nil:
		return errorResult(m.Name, fmt.Sprintf("query %s at %s: %v", m.Name, chk.ep.Address, err))
	}
	outcome, msg := evaluate(m, chk.kind, value)
	return Result{Metric: m.Name, Value: value, Outcome: outcome, Message: msg}
}

func errorResult(metric, message string) Result {
	return Result{Metric: metric, Value: math.NaN(), Outcome: v1beta1.MetricError, Message: message}
}

// prepare resolves a metric's query (its MetricTemplate or a builtin) and renders it.
func (p *Prometheus) prepare(ctx context.Context, c *v1beta1.Canary, m *v1beta1.CanaryMetric) (check, error) {
	vars := VarsFor(c, m)
	vars.Zone = p.defaults.Zone
	if m.TemplateRef != nil {
		mt, ep, err := p.template(ctx, c, m.TemplateRef)
		if err != nil {
			return check{}, fmt.Errorf("%s: %w", m.Name, err)
		}
		query, err := renderStrict(mt.Spec.Query, vars)
		if err != nil {
			return check{}, fmt.Errorf("%s: %w", m.Name, err)
		}
		return check{query: query, kind: kindTemplate, ep: ep}, nil
	}

	tmpl, ok := BuiltinQuery(m.Name)
	if !ok && m.Query != "" {
		// Flagger's deprecated inline query: a template metric on the Canary's server.
		query, err := renderStrict(m.Query, vars)
		if err != nil {
			return check{}, fmt.Errorf("%s: %w", m.Name, err)
		}
		return check{query: query, kind: kindTemplate, ep: p.builtinEndpoint(c)}, nil
	}
	if !ok {
		return check{}, fmt.Errorf("%s is not a builtin metric (%s, %s) and has no templateRef",
			m.Name, v1beta1.MetricRequestSuccessRate, v1beta1.MetricRequestDuration)
	}
	chk := check{kind: kindSuccessRate, ep: p.builtinEndpoint(c)}
	if m.Name == v1beta1.MetricRequestDuration {
		chk.kind = kindDuration
	}
	var err error
	if chk.query, err = renderStrict(tmpl, vars); err != nil {
		return check{}, fmt.Errorf("%s: %w", m.Name, err)
	}
	if traffic, ok := v1beta1.BuiltinTrafficQuery(m.Name); ok {
		if chk.traffic, err = renderStrict(traffic, vars); err != nil {
			return check{}, fmt.Errorf("%s: %w", m.Name, err)
		}
	}
	return chk, nil
}

// allErrorsNote ends the message of a success rate that is 0 because no response but 5xx
// has a series: the query itself found nothing.
const allErrorsNote = " (no non-5xx responses: 100% errors)"

// noValues is the result of a query that found nothing (an empty vector or NaN): NoData,
// or Skipped with onNoData: skip. A builtin success rate first asks its denominator: a
// canary that answers only 5xx has no non-5xx series, so the ratio is empty although
// there is traffic; that is a success rate of 0, compared with the threshold as usual,
// and never skipped.
func (p *Prometheus) noValues(ctx context.Context, m *v1beta1.CanaryMetric, chk check) Result {
	if chk.traffic != "" {
		total, err := p.clients.query(ctx, chk.ep, chk.traffic)
		switch {
		case err == nil && total > 0:
			outcome, msg := evaluate(m, chk.kind, 0)
			return Result{Metric: m.Name, Value: 0, Outcome: outcome, Message: msg + allErrorsNote}
		case err != nil && !errors.Is(err, errNoValues):
			// The ratio was empty but whether there was traffic is unknown: not "no data".
			return errorResult(m.Name, fmt.Sprintf("query %s traffic at %s: %v", m.Name, chk.ep.Address, err))
		}
	}
	r := Result{Metric: m.Name, Value: math.NaN(), Outcome: v1beta1.MetricNoData,
		Message: fmt.Sprintf("no values found for %s (no traffic to the canary yet?)", m.Name)}
	if m.OnNoData == v1beta1.NoDataSkip {
		r.Outcome = v1beta1.MetricSkipped
		r.Message += "; skipped (onNoData: skip)"
	}
	return r
}

// evaluate decides Passed or Failed as Flagger does: thresholdRange wins; otherwise a
// success rate fails below threshold, a duration and a template metric above it.
func evaluate(m *v1beta1.CanaryMetric, kind metricKind, v float64) (v1beta1.MetricOutcome, string) {
	name := m.Name
	if tr := m.ThresholdRange; tr != nil {
		if tr.Min != nil && v < *tr.Min {
			return v1beta1.MetricFailed, fmt.Sprintf("%s %s < %v", name, formatValue(v, *tr.Min), *tr.Min)
		}
		if tr.Max != nil && v > *tr.Max {
			return v1beta1.MetricFailed, fmt.Sprintf("%s %s > %v", name, formatValue(v, *tr.Max), *tr.Max)
		}
		return v1beta1.MetricPassed, fmt.Sprintf("%s %s within %s", name, formatValue(v, math.NaN()), rangeString(tr))
	}
	val := formatValue(v, m.Threshold)
	if kind == kindSuccessRate {
		if v < m.Threshold {
			return v1beta1.MetricFailed, fmt.Sprintf("%s %s < %v", name, val, m.Threshold)
		}
		return v1beta1.MetricPassed, fmt.Sprintf("%s %s >= %v", name, val, m.Threshold)
	}
	if v > m.Threshold {
		return v1beta1.MetricFailed, fmt.Sprintf("%s %s > %v", name, val, m.Threshold)
	}
	return v1beta1.MetricPassed, fmt.Sprintf("%s %s <= %v", name, val, m.Threshold)
}

func rangeString(tr *v1beta1.CanaryThresholdRange) string {
	lo, hi := "-inf", "+inf"
	if tr.Min != nil {
		lo = strconv.FormatFloat(*tr.Min, 'g', -1, 64)
	}
	if tr.Max != nil {
		hi = strconv.FormatFloat(*tr.Max, 'g', -1, 64)
	}
	return "[" + lo + ", " + hi + "]"
}

// formatValue prints at most two decimals and no trailing zeros (87.5, 742, 99.95), or
// every digit when rounding would make the value look equal to the bound it is compared
// with ("98.999 < 99", not "99 < 99").
func formatValue(v, bound float64) string {
	rounded := math.Round(v*100) / 100
	if rounded == bound && v != bound {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return strconv.FormatFloat(rounded, 'f', -1, 64)
}

// builtinEndpoint is where builtin metrics are queried: spec.metricsServer, else the
// default server. The default server's credentials (token, basic auth, headers) are only
// ever sent to the default address: a Canary author must not be able to point them at a
// server of their own. The CA and TLS settings carry over.
func (p *Prometheus) builtinEndpoint(c *v1beta1.Canary) endpoint {
	if c.Spec.MetricsServer == "" || c.Spec.MetricsServer == p.defaults.Address {
		return endpoint{ProviderConfig: p.defaults}
	}
	return endpoint{ProviderConfig: p.foreign(c.Spec.MetricsServer)}
}

// foreign is the default configuration for another address, without its credentials.
func (p *Prometheus) foreign(address string) ProviderConfig {
	return ProviderConfig{
		Address:            address,
		CAFile:             p.defaults.CAFile,
		InsecureSkipVerify: p.defaults.InsecureSkipVerify,
		Timeout:            p.defaults.Timeout,
	}
}

// template reads a metric's MetricTemplate and resolves its provider: its address (or the
// default server), its Secret (in the template's namespace, as in Flagger), headers,
// timeout and TLS settings.
func (p *Prometheus) template(ctx context.Context, c *v1beta1.Canary, ref *v1beta1.CrossNamespaceObjectReference) (*v1beta1.MetricTemplate, endpoint, error) {
	key := client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}
	if key.Namespace == "" {
		key.Namespace = c.Namespace
	}
	mt := &v1beta1.MetricTemplate{}
	if err := p.reader.Get(ctx, key, mt); err != nil {
		return nil, endpoint{}, fmt.Errorf("get MetricTemplate %s: %w", key, err)
	}
	prov := mt.Spec.Provider
	if prov.Type != "" && prov.Type != "prometheus" {
		return nil, endpoint{}, fmt.Errorf("MetricTemplate %s: provider type %q is not served (only prometheus)", key, prov.Type)
	}

	var ep endpoint
	if prov.Address == "" || prov.Address == p.defaults.Address {
		ep.ProviderConfig = p.defaults
	} else {
		ep.ProviderConfig = p.foreign(prov.Address)
	}
	if prov.InsecureSkipVerify {
		ep.InsecureSkipVerify = true
	}
	if prov.Timeout != "" {
		d, err := time.ParseDuration(prov.Timeout)
		if err != nil || d <= 0 {
			return nil, endpoint{}, fmt.Errorf("MetricTemplate %s: provider.timeout %q is not a positive duration", key, prov.Timeout)
		}
		ep.Timeout = d
	}
	if len(prov.Headers) > 0 {
		// The template's headers replace the default's of the same name.
		headers := ep.Headers.Clone()
		if headers == nil {
			headers = http.Header{}
		}
		for k, vs := range prov.Headers.HTTP() {
			headers[k] = vs
		}
		ep.Headers = headers
	}
	if prov.SecretRef != nil {
		secret := &corev1.Secret{}
		skey := client.ObjectKey{Namespace: key.Namespace, Name: prov.SecretRef.Name}
		if err := p.reader.Get(ctx, skey, secret); err != nil {
			return nil, endpoint{}, fmt.Errorf("get provider Secret %s: %w", skey, err)
		}
		ep.caPEM = secret.Data["ca.crt"]
		// The template's own credentials replace any default ones.
		if token := strings.TrimSpace(string(secret.Data["token"])); token != "" {
			ep.token, ep.BearerTokenFile, ep.Username, ep.Password = token, "", "", ""
		} else if user, pass := string(secret.Data["username"]), string(secret.Data["password"]); user != "" || pass != "" {
			ep.Username, ep.Password, ep.BearerTokenFile = user, pass, ""
		}
	}
	return mt, ep, nil
}
