package router

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"sigs.k8s.io/yaml"
)

// aliceAB is alice under A/B testing: Flagger's documented match examples (a header, a
// cookie) and one entry with every condition coalmine renders.
var aliceAB = func() Target {
	t := alice
	t.Match = []Match{
		{Headers: []HeaderMatch{{Name: "x-canary", Value: StringMatch{Exact: "insider"}}}},
		{Headers: []HeaderMatch{{Name: "cookie", Value: StringMatch{Regex: "^(.*?;)?(canary=always)(;.*)?$"}}}},
		{
			Path:   &StringMatch{Prefix: "/api"},
			Method: &StringMatch{Exact: "GET"},
			Headers: []HeaderMatch{
				{Name: "x-beta", Value: StringMatch{}},
				{Name: "user-agent", Value: StringMatch{Suffix: "Safari/605.1"}},
			},
		},
	}
	return t
}()

// update rewrites the golden files: go test ./rollout/router -run TestABRoutes -update
var update = os.Getenv("UPDATE_GOLDEN") != ""

func golden(t *testing.T, name string, got any, asJSON bool) {
	t.Helper()
	var data []byte
	var err error
	if asJSON {
		data, err = json.MarshalIndent(got, "", "  ")
		data = append(data, '\n')
	} else {
		data, err = yaml.Marshal(got)
	}
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", name)
	if update {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var g, w any
	if err := yaml.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s differs (UPDATE_GOLDEN=1 rewrites it); got:\n%s", name, data)
	}
}

// TestABRoutesRenderMatches: under A/B testing the matching requests get the weight in
// conf.http (TrafficRoute, one entry per alternative, in order) or in a first rule
// (MeshHTTPRoute, one match per alternative), and everything else stays on primary. The
// TrafficRoute golden file is also judged by Kuma's own validator (e2e/kumajudge).
func TestABRoutesRenderMatches(t *testing.T) {
	tr := NewTrafficRoute(aliceAB, 100)
	golden(t, "trafficroute-ab.json", tr, true)
	if got := tr.Spec.Conf.Split; got[0].Weight != 100 || got[1].Weight != 0 {
		t.Errorf("conf.split %+v, want all requests that match nothing on primary", got)
	}
	if len(tr.Spec.Conf.HTTP) != len(aliceAB.Match) {
		t.Errorf("%d conf.http entries, want one per match alternative (%d)", len(tr.Spec.Conf.HTTP), len(aliceAB.Match))
	}
	golden(t, "meshhttproute-ab.yaml", NewMeshHTTPRoute(aliceAB, 100), false)

	// At weight 10 the matching requests are split 90/10.
	for _, h := range NewTrafficRoute(aliceAB, 10).Spec.Conf.HTTP {
		if h.Split[0].Weight != 90 || h.Split[1].Weight != 10 {
			t.Errorf("conf.http split %+v, want 90/10", h.Split)
		}
	}
	rules := NewMeshHTTPRoute(aliceAB, 10).Spec.To[0].Rules
	if b := rules[0].Default.BackendRefs; b[0].Weight != 90 || b[1].Weight != 10 {
		t.Errorf("A/B rule backends %+v, want 90/10", b)
	}
	if b := rules[1].Default.BackendRefs; b[0].Weight != 100 || b[1].Weight != 0 {
		t.Errorf("catch-all rule backends %+v, want 100/0", b)
	}
}

// TestABRouteAtZeroIsThePlainRoute: before the analysis starts and after it ends, an A/B
// Canary's route is exactly the one without match (no http section, one rule).
func TestABRouteAtZeroIsThePlainRoute(t *testing.T) {
	if got, want := NewTrafficRoute(aliceAB, 0), NewTrafficRoute(alice, 0); !reflect.DeepEqual(got, want) {
		t.Errorf("TrafficRoute at 0 with match:\n%+v\nwant\n%+v", got.Spec, want.Spec)
	}
	if got, want := NewMeshHTTPRoute(aliceAB, 0), NewMeshHTTPRoute(alice, 0); !reflect.DeepEqual(got, want) {
		t.Errorf("MeshHTTPRoute at 0 with match:\n%+v\nwant\n%+v", got.Spec, want.Spec)
	}
}

// TestABMatchConditions: each Istio matcher in the form Kuma takes it; suffixes (neither
// kind has one) become anchored RE2 patterns.
func TestABMatchConditions(t *testing.T) {
	m := trafficRouteMatch(Match{Headers: []HeaderMatch{
		{Name: "a", Value: StringMatch{Exact: "x"}}, {Name: "b", Value: StringMatch{Prefix: "x"}},
		{Name: "c", Value: StringMatch{Suffix: "x.y"}}, {Name: "d", Value: StringMatch{Regex: "x+"}}, {Name: "e"},
	}})
	want := map[string]KumaStringMatcher{"a": {Exact: "x"}, "b": {Prefix: "x"}, "c": {Regex: `.*x\.y`}, "d": {Regex: "x+"}, "e": {Regex: ".*"}}
	if !reflect.DeepEqual(m.Headers, want) {
		t.Errorf("TrafficRoute headers %+v, want %+v", m.Headers, want)
	}
	if m := trafficRouteMatch(Match{}); m.Path == nil || m.Path.Prefix != "/" {
		t.Errorf("a Match without conditions: %+v, want the catch-all path (Kuma needs a condition)", m)
	}
	mm := meshHTTPRouteMatch(Match{Path: &StringMatch{Prefix: "/a.b"}, Headers: []HeaderMatch{
		{Name: "e"}, {Name: "c", Value: StringMatch{Suffix: "x.y"}}, {Name: "a", Value: StringMatch{Exact: "x"}},
	}})
	wantH := []HTTPHeaderMatch{{Type: "Exact", Name: "a", Value: "x"}, {Type: "RegularExpression", Name: "c", Value: `.*x\.y`}, {Type: "Present", Name: "e"}}
	if !reflect.DeepEqual(mm.Headers, wantH) || *mm.Path != (PathMatch{Type: "PathPrefix", Value: "/a.b"}) {
		t.Errorf("MeshHTTPRoute match %+v %+v, want headers %+v and the prefix as PathPrefix (a pattern would rank below the catch-all)", mm.Headers, *mm.Path, wantH)
	}
	if mm := meshHTTPRouteMatch(Match{Path: &StringMatch{Exact: "/x"}}); *mm.Path != (PathMatch{Type: "Exact", Value: "/x"}) {
		t.Errorf("exact path %+v", *mm.Path)
	}
}

// TestABObserveReadsTheMatchRule: the weight read back from an A/B route is the one the
// matching requests get, for both kinds.
func TestABObserveReadsTheMatchRule(t *testing.T) {
	c, _ := newClient(t)
	for kind, r := range routers(c) {
		if err := r.SetWeights(context.Background(), aliceAB, 100); err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if got := observe(t, r, aliceAB); !got.Found || got.Weight != 100 {
			t.Errorf("%s: observed %+v, want weight 100", kind, got)
		}
	}
}
