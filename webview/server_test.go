package webview

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache/informertest"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/canarywatch"
)

func alice() *v1beta1.Canary {
	return &v1beta1.Canary{
		ObjectMeta: metav1.ObjectMeta{Namespace: "apps-a-mesh-a", Name: "alice"},
		Spec: v1beta1.CanarySpec{
			TargetRef: v1beta1.LocalObjectReference{Name: "alice"},
			Service:   v1beta1.CanaryService{Port: 8080},
			Analysis: &v1beta1.CanaryAnalysis{Threshold: 5, MaxWeight: 50, StepWeight: 5, Metrics: []v1beta1.CanaryMetric{
				{Name: v1beta1.MetricRequestSuccessRate, Threshold: 99},
				{Name: v1beta1.MetricRequestDuration, Threshold: 500},
			}},
		},
		Status: v1beta1.CanaryStatus{
			Phase: v1beta1.PhaseProgressing, CanaryWeight: 15, FailedChecks: 1, CanaryRevision: "c9ed74db47",
			Metrics: []v1beta1.MetricStatus{
				{Name: v1beta1.MetricRequestSuccessRate, Value: "97.5", Outcome: v1beta1.MetricFailed, Message: "request-success-rate 97.5 < 99"},
				{Name: v1beta1.MetricRequestDuration, Value: "50", Outcome: v1beta1.MetricPassed},
			},
		},
	}
}

func testServer(t *testing.T) http.Handler {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := v1beta1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := alice()
	reader := fake.NewClientBuilder().WithScheme(scheme).WithObjects(c).WithStatusSubresource(c).Build()
	w := canarywatch.New(&informertest.FakeInformers{}, canarywatch.Options{})
	first := c.DeepCopy()
	first.Status = v1beta1.CanaryStatus{Phase: v1beta1.PhaseSucceeded}
	w.Observe(first)
	w.Observe(c)
	return New("127.0.0.1:0", reader, w).Handler()
}

func get(t *testing.T, h http.Handler, method, target, host string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	r.Host = host
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

func TestListAndDetail(t *testing.T) {
	h := testServer(t)
	rec := get(t, h, http.MethodGet, "/api/canaries", "localhost:9898")
	if rec.Code != http.StatusOK {
		t.Fatalf("list: %d %s", rec.Code, rec.Body)
	}
	var list struct{ Canaries []Summary }
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Canaries) != 1 {
		t.Fatalf("list %+v, want alice", list)
	}
	a := list.Canaries[0]
	if a.Phase != "Progressing" || a.Weight != 15 || a.FailedChecks != 1 || a.Threshold != 5 || a.MaxWeight != 50 || len(a.Metrics) != 2 {
		t.Errorf("summary %+v", a)
	}
	if m := a.Metrics[0]; m.Value == nil || *m.Value != 97.5 || m.Min == nil || *m.Min != 99 || m.Outcome != "Failed" {
		t.Errorf("success rate %+v, want 97.5 against min 99, Failed", m)
	}

	rec = get(t, h, http.MethodGet, "/api/canaries/apps-a-mesh-a/alice", "127.0.0.1:9898")
	var d Detail
	if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("detail: %d %v %s", rec.Code, err, rec.Body)
	}
	if len(d.History.Samples) != 2 || d.History.Samples[1].Weight != 15 || d.History.Samples[0].Phase != "Succeeded" {
		t.Errorf("history %+v, want Succeeded then Progressing at 15%%", d.History.Samples)
	}
	if rec := get(t, h, http.MethodGet, "/api/canaries/apps-a-mesh-a/bob", "localhost"); rec.Code != http.StatusNotFound {
		t.Errorf("unknown Canary: %d, want 404", rec.Code)
	}
}

func TestPagesAndAssets(t *testing.T) {
	h := testServer(t)
	for target, want := range map[string]string{
		"/":                             "text/html",
		"/canaries/apps-a-mesh-a/alice": "text/html",
		"/app.js":                       "text/javascript",
		"/style.css":                    "text/css",
		"/favicon.ico":                  "image/svg+xml",
	} {
		rec := get(t, h, http.MethodGet, target, "localhost:9898")
		if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), want) {
			t.Errorf("GET %s: %d %q, want 200 %s", target, rec.Code, rec.Header().Get("Content-Type"), want)
		}
		if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("GET %s: CSP %q", target, csp)
		}
	}
	if rec := get(t, h, http.MethodGet, "/nothing", "localhost"); rec.Code != http.StatusNotFound {
		t.Errorf("GET /nothing: %d, want 404", rec.Code)
	}
}

func TestReadOnlyAndLocalOnly(t *testing.T) {
	h := testServer(t)
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		if rec := get(t, h, m, "/api/canaries", "localhost"); rec.Code != http.StatusMethodNotAllowed {
			t.Errorf("%s: %d, want 405", m, rec.Code)
		}
	}
	for host, ok := range map[string]bool{
		"localhost:9898": true, "127.0.0.1:9898": true, "[::1]:9898": true, "10.0.0.7": true,
		"evil.example.com": false, "evil.example.com:9898": false,
	} {
		rec := get(t, h, http.MethodGet, "/api/canaries", host)
		if (rec.Code == http.StatusOK) != ok {
			t.Errorf("Host %s: %d, want allowed=%t", host, rec.Code, ok)
		}
	}
}

func TestStartServesAndStops(t *testing.T) {
	s := New("127.0.0.1:0", nil, nil)
	ctx, cancel := contextWithTimeout(t, 5*time.Second)
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Start did not return within 3s of its context ending")
	}
}

func contextWithTimeout(t *testing.T, d time.Duration) (context.Context, context.CancelFunc) {
	t.Helper()
	return context.WithTimeout(t.Context(), d)
}
