package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/sandbox"
)

// webviewScreenshot is where TestWebViewInChromium saves its screenshot:
// $COALMINE_ARTIFACTS (default: coalmine-e2e-artifacts in the temporary directory), and
// docs/webview.png too when COALMINE_UPDATE_DOCS=1 (the README shows that one).
func webviewScreenshots(t *testing.T) []string {
	t.Helper()
	dir := os.Getenv("COALMINE_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "coalmine-e2e-artifacts")
	}
	out := []string{filepath.Join(dir, "webview.png")}
	if os.Getenv("COALMINE_UPDATE_DOCS") == "1" {
		root, err := sandbox.RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, filepath.Join(root, "docs", "webview.png"))
	}
	return out
}

// pageState is what alice's page shows, read from its DOM.
type pageState struct {
	Phase   string `json:"phase"`
	Weight  string `json:"weight"`
	Failed  string `json:"failed"`
	Samples string `json:"samples"`
	Status  string `json:"status"`
	Metrics int    `json:"metrics"`
	Lines   int    `json:"lines"`
}

const readPage = `JSON.stringify({
  phase: document.querySelector('#phase [data-phase]')?.dataset.phase ?? "",
  weight: document.getElementById('weight')?.dataset.weight ?? "",
  failed: document.getElementById('failed-checks')?.dataset.failed ?? "",
  samples: document.getElementById('timeline')?.dataset.samples ?? "",
  status: document.getElementById('status')?.textContent ?? "",
  metrics: document.querySelectorAll('#metrics tr[data-metric]').length,
  lines: document.querySelectorAll('#timeline polyline').length,
})`

// TestWebViewInChromium loads coalmine's web view in headless Chromium: the list shows
// alice, alice's page follows a rollout live (phase, weight, timeline) to its promotion,
// a screenshot is saved mid-rollout, and the page logged no console error, failed load or
// uncaught exception throughout.
func TestWebViewInChromium(t *testing.T) {
	t.Parallel()
	env := sharedRollout(t)
	addrs, err := coalmineAddrs()
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + addrs.web
	s := newScenario(t, env, scenarioOptions{})
	s.deploy()
	b := startBrowser(t, s.ctx, 1280, 1600)

	b.navigate(s.ctx, base+"/")
	row := fmt.Sprintf(`document.querySelector('tr[data-canary="%s/%s"] [data-phase]')?.dataset.phase ?? ""`, s.ns, appName)
	waitFor(t, 15*time.Second, func(ctx context.Context) (bool, error) {
		var phase string
		if err := b.eval(ctx, row, &phase); err != nil {
			return false, err
		}
		if phase != string(coalminev1beta1.PhaseInitialized) {
			return false, fmt.Errorf("the list shows %s/%s as %q, want Initialized", s.ns, appName, phase)
		}
		return true, nil
	})

	b.navigate(s.ctx, base+"/canaries/"+s.ns+"/"+appName)
	s.ship(imageV2, nil)
	var weights []string
	var phases []string
	var last pageState
	shot := false
	waitFor(t, 3*time.Minute, func(ctx context.Context) (bool, error) {
		var raw string
		if err := b.eval(ctx, readPage, &raw); err != nil {
			return false, err
		}
		if err := json.Unmarshal([]byte(raw), &last); err != nil {
			return false, err
		}
		if len(weights) == 0 || weights[len(weights)-1] != last.Weight {
			weights = append(weights, last.Weight)
		}
		if len(phases) == 0 || phases[len(phases)-1] != last.Phase {
			phases = append(phases, last.Phase)
		}
		if !shot && last.Phase == string(coalminev1beta1.PhaseProgressing) && last.Weight == "30" && last.Metrics == 2 {
			for _, path := range webviewScreenshots(t) {
				b.screenshot(ctx, path)
				t.Logf("screenshot of alice at 30%% saved to %s", path)
			}
			shot = true
		}
		if last.Phase != string(coalminev1beta1.PhaseSucceeded) {
			return false, fmt.Errorf("page shows %+v (weights so far %v)", last, weights)
		}
		return true, nil
	})
	t.Logf("the page showed phases %v and weights %v", phases, weights)
	if !slices.Contains(phases, string(coalminev1beta1.PhaseProgressing)) {
		t.Errorf("the page never showed Progressing: %v", phases)
	}
	steps := 0
	for _, w := range weights {
		if w != "0" && w != "" {
			steps++
		}
		if !slices.Contains([]string{"", "0", "5", "10", "15", "20", "25", "30", "35", "40", "45", "50"}, w) {
			t.Errorf("the page showed weight %q, not one of the seed's steps", w)
		}
	}
	if steps < 5 {
		t.Errorf("the page showed %d weights during the rollout (%v), want it to follow the steps live", steps, weights)
	}
	if !shot {
		t.Error("no screenshot: the page never showed alice Progressing at 30% with both metrics")
	}
	if last.Lines == 0 || last.Samples == "" || last.Samples == "0" {
		t.Errorf("timeline not drawn: %+v", last)
	}
	if errs := b.consoleErrors(); len(errs) > 0 {
		t.Errorf("the page logged errors:\n%v", errs)
	}
}
