package analysis

import (
	"context"
	"errors"
	"fmt"
	"math"
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

func (p *Prometheus) runMetric(ctx context.Context, c *v1beta1.Canary, m *v1beta1.CanaryMetric) Result {
	errorResult := func(format string, args ...any) Result {
		return Result{Metric: m.Name, Value: math.NaN(), Outcome: v1beta1.MetricError, Message: fmt.Sprintf(format, args...)}
	}

	var (
		tmpl string
		kind metricKind
		ep   endpoint
	)
	switch {
	case m.TemplateRef != nil:
		mt, secretEP, err := p.template(ctx, c, m.TemplateRef)
		if err != nil {
			return errorResult("%s: %v", m.Name, err)
		}
		tmpl, kind, ep = mt.Spec.Query, kindTemplate, secretEP
	default:
		q, ok := BuiltinQuery(m.Name)
		if !ok {
			return errorResult("%s is not a builtin metric (%s, %s) and has no templateRef",
				m.Name, v1beta1.MetricRequestSuccessRate, v1beta1.MetricRequestDuration)
		}
		tmpl, ep = q, p.builtinEndpoint(c)
		kind = kindSuccessRate
		if m.Name == v1beta1.MetricRequestDuration {
			kind = kindDuration
		}
	}

	query, err := renderStrict(tmpl, VarsFor(c, m))
	if err != nil {
		return errorResult("%s: %v", m.Name, err)
	}
	value, series, err := p.clients.query(ctx, ep, query)
	switch {
	case errors.Is(err, errNoValues):
		r := Result{Metric: m.Name, Value: math.NaN(), Outcome: v1beta1.MetricNoData,
			Message: fmt.Sprintf("no values found for %s (no traffic to the canary yet?)", m.Name)}
		if m.OnNoData == v1beta1.NoDataSkip {
			r.Outcome = v1beta1.MetricSkipped
			r.Message += "; skipped (onNoData: skip)"
		}
		return r
	case err != nil:
		return errorResult("query %s at %s: %v", m.Name, ep.Address, err)
	}
	outcome, msg := evaluate(m, kind, value)
	if series > 1 {
		msg += fmt.Sprintf(" (first of %d series; aggregate the query to one)", series)
	}
	return Result{Metric: m.Name, Value: value, Outcome: outcome, Message: msg}
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
		headers := make(map[string]string, len(ep.Headers)+len(prov.Headers))
		for k, v := range ep.Headers {
			headers[k] = v
		}
		for k, v := range prov.Headers {
			headers[k] = v
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
