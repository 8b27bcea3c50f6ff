package kumajudge

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// split9505 is DESIGN's appendix example, named as coalmine names it.
const split9505 = `{
  "apiVersion": "kuma.io/v1alpha1",
  "kind": "TrafficRoute",
  "mesh": "mesh-a",
  "metadata": {"name": "alice.apps-a-mesh-a", "labels": {"app.kubernetes.io/managed-by": "coalmine"}},
  "spec": {
    "sources": [{"match": {"kuma.io/service": "*"}}],
    "destinations": [{"match": {"kuma.io/service": "alice_apps-a-mesh-a_svc_8080"}}],
    "conf": {"split": [
      {"weight": 95, "destination": {"kuma.io/service": "alice-primary_apps-a-mesh-a_svc_8080"}},
      {"weight": 5, "destination": {"kuma.io/service": "alice-canary_apps-a-mesh-a_svc_8080"}}
    ]}
  }
}`

func route(t *testing.T, edit func(string) string) Route {
	t.Helper()
	rs, err := Parse([]byte(edit(split9505)))
	if err != nil || len(rs) != 1 {
		t.Fatalf("parse: %v (%d routes)", err, len(rs))
	}
	return rs[0]
}

func TestJudge(t *testing.T) {
	same := func(s string) string { return s }
	replace := func(old, new string) func(string) string {
		return func(s string) string {
			if !strings.Contains(s, old) {
				panic("fixture lacks " + old)
			}
			return strings.Replace(s, old, new, 1)
		}
	}
	tests := []struct {
		name    string
		edit    func(string) string
		wantErr string // empty: valid
	}{
		{name: "95/5 split is valid", edit: same},
		{name: "100/0 split is valid (0 is allowed)", edit: func(s string) string {
			return replace(`"weight": 95`, `"weight": 100`)(replace(`"weight": 5`, `"weight": 0`)(s))
		}},
		{name: "no sources", edit: replace(`"sources": [{"match": {"kuma.io/service": "*"}}],`, ``),
			wantErr: "sources: must have at least one element"},
		{name: "weights all zero", edit: func(s string) string {
			return replace(`"weight": 95`, `"weight": 0`)(replace(`"weight": 5`, `"weight": 0`)(s))
		}, wantErr: "conf.split"},
		{name: "missing weight", edit: replace(`"weight": 5, `, ``),
			wantErr: "conf.split[1].weight"},
		{name: "destination with an extra tag", edit: replace(`"alice_apps-a-mesh-a_svc_8080"}`, `"alice_apps-a-mesh-a_svc_8080", "version": "v1"}`),
			wantErr: "destinations[0].match"},
		{name: "split and destination together", edit: replace(`"conf": {`, `"conf": {"destination": {"kuma.io/service": "x"}, `),
			wantErr: "cannot be defined at the same time"},
		{name: "no mesh", edit: replace(`"mesh": "mesh-a",`, ``), wantErr: "mesh: cannot be empty"},
		{name: "misspelt field Kuma would drop", edit: replace(`"weight": 5`, `"weigth": 5`),
			wantErr: "Kuma would ignore"},
		{name: "namespace on a cluster-scoped route", edit: replace(`"name": "alice.apps-a-mesh-a"`, `"name": "alice", "namespace": "apps-a-mesh-a"`),
			wantErr: "metadata.namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Judge(route(t, tt.edit))
			switch {
			case tt.wantErr == "" && !v.OK():
				t.Fatalf("want valid, got %s", v)
			case tt.wantErr != "" && v.OK():
				t.Fatalf("want invalid (%s), got %s", tt.wantErr, v)
			case tt.wantErr != "" && !strings.Contains(v.String(), tt.wantErr):
				t.Fatalf("want an error containing %q, got %s", tt.wantErr, v)
			}
		})
	}
}

func TestLoadDirectoryOfArraysObjectsAndLists(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.json", split9505)
	write("b.json", "["+split9505+","+split9505+"]")
	write("c.json", `{"apiVersion":"v1","kind":"List","items":[`+split9505+`]}`)
	write("ignored.txt", "not json")

	routes, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 4 {
		t.Fatalf("want 4 routes, got %d", len(routes))
	}
	for _, r := range routes {
		if v := Judge(r); !v.OK() || v.String() != "ok alice.apps-a-mesh-a" {
			t.Errorf("got %q", v)
		}
	}
}

// TestJudgeCoalminesABTrafficRoute: the A/B testing TrafficRoute coalmine writes (conf.http
// matches on headers, a cookie, path and method; the golden file of the router's test) is
// one Kuma accepts, and an http entry without a condition or with all weights at 0 is not.
func TestJudgeCoalminesABTrafficRoute(t *testing.T) {
	routes, err := Load(filepath.Join("..", "..", "rollout", "router", "testdata", "trafficroute-ab.json"))
	if err != nil || len(routes) != 1 {
		t.Fatalf("load the router's A/B golden file: %v (%d routes)", err, len(routes))
	}
	if v := Judge(routes[0]); !v.OK() {
		t.Fatalf("Kuma refuses coalmine's A/B TrafficRoute: %s", v)
	}
	data, err := os.ReadFile(filepath.Join("..", "..", "rollout", "router", "testdata", "trafficroute-ab.json"))
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string][2]string{
		"http entry without condition": {`"headers": {
              "x-canary": {
                "exact": "insider"
              }
            }`, ``},
		"http split all zero": {`"weight": 100,
              "destination": {
                "kuma.io/service": "alice-canary_apps-a-mesh-a_svc_8080"`, `"weight": 0,
              "destination": {
                "kuma.io/service": "alice-canary_apps-a-mesh-a_svc_8080"`},
	} {
		s := string(data)
		if !strings.Contains(s, edit[0]) {
			t.Fatalf("%s: fixture lacks %q", name, edit[0])
		}
		rs, err := Parse([]byte(strings.Replace(s, edit[0], edit[1], 1)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if v := Judge(rs[0]); v.OK() {
			t.Errorf("%s: Kuma accepts it, want refused", name)
		}
	}
}
