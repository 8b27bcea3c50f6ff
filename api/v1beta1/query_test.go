package v1beta1

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// TestBuiltinsSelectTheApexService: the builtins name the canary's Envoy cluster after
// {{ service }}, the apex Service, never after {{ target }}.
func TestBuiltinsSelectTheApexService(t *testing.T) {
	vars := QueryVars{Name: "alice", Namespace: "apps", Target: "alice", Service: "web", Interval: "1m"}
	for _, name := range []string{MetricRequestSuccessRate, MetricRequestDuration} {
		t.Run(name, func(t *testing.T) {
			tmpl, ok := BuiltinQuery(name)
			if !ok {
				t.Fatal("not a builtin")
			}
			if strings.Contains(tmpl, "{{ target }}") {
				t.Errorf("builtin uses {{ target }}:\n%s", tmpl)
			}
			q, err := RenderQuery(tmpl, vars, true)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(q, `envoy_cluster_name=~"web-canary_apps_svc_[0-9a-zA-Z-]+"`) || strings.Contains(q, "alice") {
				t.Errorf("rendered query does not select web-canary only:\n%s", q)
			}
		})
	}
}

// TestBuiltinTrafficQueryIsTheSuccessRateDenominator: the query the analyzer runs when the
// success rate is empty is the ratio's own denominator, verbatim, and only the success
// rate has one.
func TestBuiltinTrafficQueryIsTheSuccessRateDenominator(t *testing.T) {
	ratio, _ := BuiltinQuery(MetricRequestSuccessRate)
	traffic, ok := BuiltinTrafficQuery(MetricRequestSuccessRate)
	if !ok {
		t.Fatal("request-success-rate has no traffic query")
	}
	if !strings.HasSuffix(ratio, "\n/ \n"+traffic+" \n* 100") {
		t.Errorf("traffic query is not the ratio's denominator:\n%s\nratio:\n%s", traffic, ratio)
	}
	if strings.Contains(traffic, "envoy_response_code") {
		t.Errorf("traffic query filters response codes:\n%s", traffic)
	}
	for _, name := range []string{MetricRequestDuration, "my-metric"} {
		if _, ok := BuiltinTrafficQuery(name); ok {
			t.Errorf("%s has a traffic query", name)
		}
	}
}

// TestBuiltinsZoneMatcher: with --zone the builtins count only that zone's callers (two
// zones remote-writing to one main Prometheus, e2e TestPrometheusTiersTwoZonesSameApp);
// without it they render no zone matcher at all.
func TestBuiltinsZoneMatcher(t *testing.T) {
	for _, name := range []string{MetricRequestSuccessRate, MetricRequestDuration} {
		tmpl, _ := BuiltinQuery(name)
		vars := QueryVars{Name: "alice", Namespace: "apps", Target: "alice", Service: "alice", Interval: "1m"}
		plain, err := RenderQuery(tmpl, vars, true)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(plain, "zone") {
			t.Errorf("%s without a zone mentions one:\n%s", name, plain)
		}
		vars.Zone = "zone-a"
		zoned, err := RenderQuery(tmpl, vars, true)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(zoned, `zone="zone-a"`); n != strings.Count(zoned, "envoy_cluster_name=~") || n == 0 {
			t.Errorf("%s: %d zone matchers for %d selectors:\n%s", name, n, strings.Count(zoned, "envoy_cluster_name=~"), zoned)
		}
	}
}

// A text is parsed once and rendered by many Canaries at once: each render must see only
// its own values.
func TestRenderQueryConcurrentRendersKeepTheirValues(t *testing.T) {
	const tmpl = `{{ namespace }}/{{ name }}/{{ service }}/{{ variables.k }}`
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := strconv.Itoa(i)
			vars := QueryVars{Namespace: "ns" + n, Name: "c" + n, Service: "s" + n, Variables: map[string]string{"k": "v" + n}}
			for range 50 {
				got, err := RenderQuery(tmpl, vars, true)
				if want := "ns" + n + "/c" + n + "/s" + n + "/v" + n; err != nil || got != want {
					errs <- fmt.Sprintf("render %d: got %q, %v; want %q", i, got, err, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	// Strict and lenient renders of the same text are parsed apart.
	if _, err := RenderQuery(`{{ variables.missing }}`, QueryVars{}, true); err == nil {
		t.Error("strict render of an undefined variable: no error")
	}
	if got, err := RenderQuery(`{{ variables.missing }}`, QueryVars{}, false); err != nil || got != "" {
		t.Errorf("lenient render of an undefined variable: %q, %v; want empty", got, err)
	}
}
