package sandbox

import (
	"path/filepath"
	"strings"
	"testing"
)

// Flux's parts are built on demand (BuildFlux), never by Build: their cold build would
// more than double `make sandbox`.
func TestFluxToolsAreOptional(t *testing.T) {
	toolsDir, err := ToolsDir()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"gitserver": "v0.29.0", "source-controller": "v1.9.0", "kustomize-controller": "v1.9.6"}
	for _, ft := range fluxTools {
		for _, bt := range tools {
			if bt.name == ft.name {
				t.Errorf("%s is in Build's list too", ft.name)
			}
		}
		path, version, err := cachedPath(toolsDir, "/cache", ft)
		if err != nil {
			t.Fatalf("%s: %v", ft.name, err)
		}
		if version != want[ft.name] || path != filepath.Join("/cache", ft.name+"-"+version, ft.name) {
			t.Errorf("%s: cached at %s (version %s), want version %s", ft.name, path, version, want[ft.name])
		}
		var b Binaries
		ft.set(&b, "x")
		if b.GitServer+b.SourceController+b.KustomizeController != "x" {
			t.Errorf("%s sets %+v", ft.name, b)
		}
	}
}

func TestParseApplies(t *testing.T) {
	log := strings.Join([]string{
		"=== 2026-12-02T09:00:00Z /cache/kustomize-controller --watch-all-namespaces",
		`{"level":"info","ts":"2026-12-02T09:00:01.250Z","msg":"server-side apply completed","controller":"kustomization","Kustomization":{"name":"alice","namespace":"apps"},"namespace":"apps","name":"alice","output":{"Deployment/apps/alice":"created","Canary/apps/alice":"created"},"revision":"main@sha1:aaa"}`,
		`{"level":"info","ts":"2026-12-02T09:00:02Z","msg":"server-side apply completed","namespace":"other","name":"alice","output":{"Deployment/other/alice":"configured"},"revision":"main@sha1:bbb"}`,
		`{"level":"info","ts":"2026-12-02T09:00:03Z","msg":"Reconciliation finished","namespace":"apps","name":"alice","revision":"main@sha1:aaa"}`,
		`not json but mentions server-side apply completed`,
		`{"level":"info","ts":"2026-12-02T09:01:00Z","msg":"server-side apply completed","namespace":"apps","name":"alice","output":{"Deployment/apps/alice":"unchanged","Canary/apps/alice":"unchanged"},"revision":"main@sha1:aaa"}`,
	}, "\n")
	got, err := parseApplies(strings.NewReader(log), "apps", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("parsed %d applies, want 2: %+v", len(got), got)
	}
	if got[0].Revision != "main@sha1:aaa" || got[0].Output["Deployment/apps/alice"] != "created" || got[0].Time.IsZero() {
		t.Errorf("first apply %+v", got[0])
	}
	if got[1].Output["Canary/apps/alice"] != "unchanged" {
		t.Errorf("second apply %+v", got[1])
	}
}
