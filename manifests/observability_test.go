package manifests

// Checks of the Grafana dashboard and the Prometheus alerting rules: every query parses
// with Prometheus' own parser once Grafana's variables are expanded, the Envoy panels are
// the builtin analysis queries, the rules load as Prometheus loads a rule file (promtool
// check rules), and the chart ships both, behind their toggles, as the same bytes.

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// SampleDashboardValues are values for the dashboard's variables and Grafana's builtins,
// as Grafana would substitute them.
var sampleDashboardValues = map[string]string{
	"datasource": "prometheus", "namespace": "apps-a-mesh-a", "canary": "alice", "service": "alice",
	"__rate_interval": "1m", "__interval": "1m", "__range": "1h",
}

var promql = parser.NewParser(parser.Options{})

// The chart's copies of the dashboard and the rules (Helm reads files inside the chart
// only). `go test ./manifests -run TestChartCopies -update-chart` (make manifests) syncs them.
var observabilityCopies = map[string]string{
	"dashboards/coalmine.json":   chartDir + "/files/grafana-dashboard.json",
	"alerts/coalmine.rules.yaml": chartDir + "/files/prometheus-rules.yaml",
}

func TestChartCopiesObservability(t *testing.T) {
	for src, dst := range observabilityCopies {
		want, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(dst)
		if *updateChart && !bytes.Equal(got, want) {
			if err := os.WriteFile(dst, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s: run `go test ./manifests -run TestChartCopies -update-chart`", dst, src)
		}
	}
}

func TestDashboardQueriesParse(t *testing.T) {
	if !json.Valid(GrafanaDashboard) {
		t.Fatal("dashboards/coalmine.json is not JSON")
	}
	vars, err := DashboardVariables(GrafanaDashboard)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"datasource", "namespace", "canary", "service"} {
		if !slices.Contains(vars, want) {
			t.Errorf("dashboard lacks the template variable %s (has %v)", want, vars)
		}
	}
	queries, err := DashboardQueries(GrafanaDashboard)
	if err != nil {
		t.Fatal(err)
	}
	if len(queries) < 15 {
		t.Fatalf("%d queries, want every panel's", len(queries))
	}
	metricsSeen := map[string]bool{}
	for _, q := range queries {
		expanded, missing := ExpandVariables(q.Expr, sampleDashboardValues)
		if len(missing) > 0 {
			t.Errorf("%s %s: uses undeclared variables %v", q.Panel, q.RefID, missing)
			continue
		}
		expr, err := promql.ParseExpr(expanded)
		if err != nil {
			t.Errorf("%s %s: %q does not parse: %v", q.Panel, q.RefID, expanded, err)
			continue
		}
		// Every selector is narrowed to the chosen Canary: by name and namespace (coalmine's
		// series) or by the Envoy cluster names of its Services.
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			vs, ok := n.(*parser.VectorSelector)
			if !ok {
				return nil
			}
			metricsSeen[vs.Name] = true
			if strings.HasPrefix(q.Panel, "variable ") {
				return nil
			}
			s := vs.String()
			narrowed := strings.Contains(s, `name="alice"`) && strings.Contains(s, `namespace="apps-a-mesh-a"`) ||
				strings.Contains(s, `envoy_cluster_name=~"alice-`) && strings.Contains(s, `_apps-a-mesh-a_svc_`)
			if !narrowed {
				t.Errorf("%s %s: selector %s is not narrowed to one Canary", q.Panel, q.RefID, s)
			}
			return nil
		})
	}
	for _, m := range []string{
		"coalmine_canary_weight", "coalmine_canary_phase", "coalmine_canary_analysis_value",
		"coalmine_canary_analysis_threshold", "coalmine_canary_failed_checks", "coalmine_canary_checks_total",
		"coalmine_canary_promotions_total", "coalmine_canary_rollbacks_total", "coalmine_canary_info",
		"envoy_cluster_upstream_rq", "envoy_cluster_upstream_rq_time_bucket",
	} {
		if !metricsSeen[m] {
			t.Errorf("no dashboard query reads %s", m)
		}
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title      string         `json:"title"`
			Datasource map[string]any `json:"datasource"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(GrafanaDashboard, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID != "coalmine-canary" {
		t.Errorf("uid %q: keep it stable (links and provisioning use it)", d.UID)
	}
	for _, p := range d.Panels {
		if p.Datasource["uid"] != "${datasource}" {
			t.Errorf("panel %q uses datasource %v, want the ${datasource} variable", p.Title, p.Datasource)
		}
	}
}

// TestDashboardEnvoyPanelsAreTheBuiltinQueries: the success-rate and p99 panels compute
// what the analysis computes (api/v1beta1's builtin queries), for the canary and, with its
// Service, the primary.
func TestDashboardEnvoyPanelsAreTheBuiltinQueries(t *testing.T) {
	queries, err := DashboardQueries(GrafanaDashboard)
	if err != nil {
		t.Fatal(err)
	}
	vars := v1beta1.QueryVars{Name: "alice", Namespace: "apps-a-mesh-a", Target: "alice", Service: "alice", Interval: "1m"}
	for _, tt := range []struct{ panel, metric string }{
		{"Success rate: primary vs canary (Envoy)", v1beta1.MetricRequestSuccessRate},
		{"p99 latency: primary vs canary (Envoy)", v1beta1.MetricRequestDuration},
	} {
		tmpl, _ := v1beta1.BuiltinQuery(tt.metric)
		parsed, err := v1beta1.ParseQueryTemplate(tmpl, vars, true)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		if err := parsed.Execute(&b, nil); err != nil {
			t.Fatal(err)
		}
		canary := canonical(t, b.String())
		primary := strings.ReplaceAll(canary, "alice-canary_", "alice-primary_")
		got := map[string]string{}
		for _, q := range queries {
			if q.Panel == tt.panel {
				expanded, _ := ExpandVariables(q.Expr, sampleDashboardValues)
				got[q.RefID] = canonical(t, expanded)
			}
		}
		if got["A"] != primary || got["B"] != canary {
			t.Errorf("%s:\n primary %s\n canary  %s\nwant the builtin %s:\n primary %s\n canary  %s", tt.panel, got["A"], got["B"], tt.metric, primary, canary)
		}
	}
}

func canonical(t *testing.T, q string) string {
	t.Helper()
	e, err := promql.ParseExpr(q)
	if err != nil {
		t.Fatalf("%q: %v", q, err)
	}
	return e.String()
}

// TestAlertRulesParse loads the rules as Prometheus loads a rule file (strict fields,
// every expression and template checked), the check `promtool check rules` makes.
func TestAlertRulesParse(t *testing.T) {
	groups, errs := rulefmt.Parse(AlertRules, false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		t.Fatalf("alerts/coalmine.rules.yaml: %v", errs)
	}
	alerts := map[string]rulefmt.Rule{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = r
		}
	}
	for name, reads := range map[string]string{
		"CoalmineCanaryRolledBack": "coalmine_canary_rollbacks_total",
		"CoalmineCanaryStalled":    "coalmine_canary_last_progress_timestamp_seconds",
	} {
		r, ok := alerts[name]
		if !ok {
			t.Errorf("no alert %s", name)
			continue
		}
		if !strings.Contains(r.Expr, reads) {
			t.Errorf("%s: expr %q does not read %s", name, r.Expr, reads)
		}
		if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
			t.Errorf("%s: want a severity label, a summary and a description", name)
		}
		if _, err := promql.ParseExpr(r.Expr); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestHelmObservability: off by default; on, the dashboard is a ConfigMap labelled for
// Grafana's sidecar holding the dashboard's bytes, the rules a PrometheusRule whose spec is
// the rule file (or a ConfigMap holding it), and the web view a loopback flag.
func TestHelmObservability(t *testing.T) {
	objs := renderHelm(t)
	if find(objs, "ConfigMap", "coalmine-grafana-dashboard") != nil || find(objs, "PrometheusRule", "coalmine-alerts") != nil {
		t.Error("the dashboard and the rules render by default, want them opt-in")
	}

	objs = renderHelm(t, writeValues(t, `
grafanaDashboard: {enabled: true, namespace: monitoring, annotations: {grafana_folder: Coalmine}}
prometheusRules: {enabled: true, labels: {release: kube-prometheus-stack}}
webView: {enabled: true}
`))
	assertStrictlyValid(t, "helm (observability)", objs)
	cm := find(objs, "ConfigMap", "coalmine-grafana-dashboard")
	if cm == nil {
		t.Fatal("no dashboard ConfigMap")
	}
	if cm.GetLabels()["grafana_dashboard"] != "1" || cm.GetNamespace() != "monitoring" || cm.GetAnnotations()["grafana_folder"] != "Coalmine" {
		t.Errorf("dashboard ConfigMap %s/%s labels %v annotations %v, want grafana_dashboard: \"1\" in monitoring with the folder",
			cm.GetNamespace(), cm.GetName(), cm.GetLabels(), cm.GetAnnotations())
	}
	data, _, _ := unstructured.NestedString(cm.Object, "data", "coalmine.json")
	if strings.TrimSpace(data) != strings.TrimSpace(string(GrafanaDashboard)) {
		t.Error("the ConfigMap's coalmine.json differs from dashboards/coalmine.json")
	}
	pr := find(objs, "PrometheusRule", "coalmine-alerts")
	if pr == nil || pr.GetAPIVersion() != "monitoring.coreos.com/v1" || pr.GetLabels()["release"] != "kube-prometheus-stack" {
		t.Fatalf("PrometheusRule %v, want monitoring.coreos.com/v1 coalmine-alerts with the release label", pr)
	}
	var file map[string]any
	if err := yaml.Unmarshal(AlertRules, &file); err != nil {
		t.Fatal(err)
	}
	spec, _, _ := unstructured.NestedFieldNoCopy(pr.Object, "spec")
	gj, _ := json.Marshal(spec)
	wj, _ := json.Marshal(file)
	if !bytes.Equal(gj, wj) {
		t.Errorf("PrometheusRule spec differs from alerts/coalmine.rules.yaml:\n%s\n%s", gj, wj)
	}
	d := find(objs, "Deployment", "coalmine")
	args, _, _ := unstructured.NestedStringSlice(d.Object, "spec", "template", "spec", "containers", "0", "args")
	if len(args) == 0 {
		c, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
		args, _, _ = unstructured.NestedStringSlice(c[0].(map[string]any), "args")
	}
	if !slices.Contains(args, "--web-address=127.0.0.1:9898") {
		t.Errorf("args %v, want the web view on the pod's loopback", args)
	}

	objs = renderHelm(t, writeValues(t, "prometheusRules: {enabled: true, kind: ConfigMap}\n"))
	rules := find(objs, "ConfigMap", "coalmine-alerts")
	if rules == nil {
		t.Fatal("prometheusRules.kind ConfigMap renders no ConfigMap coalmine-alerts")
	}
	text, _, _ := unstructured.NestedString(rules.Object, "data", "coalmine.rules.yaml")
	if _, errs := rulefmt.Parse([]byte(text), false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler)); len(errs) > 0 {
		t.Errorf("the ConfigMap's rule file does not load: %v", errs)
	}
}
