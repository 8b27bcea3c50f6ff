package analysis

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"math"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// privateCA is a CA of our own, like the seed's metrics server has.
type privateCA struct {
	pem  []byte
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t *testing.T) privateCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "private test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return privateCA{pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), cert: cert, key: key}
}

func (ca privateCA) serverCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "prometheus"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// fakeProm stands in for Prometheus's HTTP API: it answers /api/v1/query from a table
// keyed by the exact query, then from one keyed by a substring of it, and checks the
// credentials it was told to expect.
type fakeProm struct {
	*httptest.Server
	mu         sync.Mutex
	exact      map[string]string // query -> JSON body; wins over answers
	answers    map[string]string // query substring -> JSON body
	wantAuth   string            // expected Authorization header; "" accepts none only
	wantHeader [2]string
	queries    []string
}

func vector(value string) string {
	return `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"` + value + `"]}]}}`
}

const emptyVector = `{"status":"success","data":{"resultType":"vector","result":[]}}`

func newFakeProm(t *testing.T, ca *privateCA) *fakeProm {
	t.Helper()
	f := &fakeProm{exact: map[string]string{}, answers: map[string]string{}}
	f.Server = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	// Handshakes refused on purpose (no CA) would log noise otherwise.
	f.Config.ErrorLog = log.New(io.Discard, "", 0)
	if ca != nil {
		f.TLS = &tls.Config{Certificates: []tls.Certificate{ca.serverCert(t)}, MinVersion: tls.VersionTLS12}
		f.StartTLS()
	} else {
		f.Start()
	}
	t.Cleanup(f.Close)
	return f
}

func (f *fakeProm) serve(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	q := r.Form.Get("query")
	f.mu.Lock()
	f.queries = append(f.queries, q)
	wantAuth, wantHeader := f.wantAuth, f.wantHeader
	answers := f.answers
	exact, isExact := f.exact[q]
	f.mu.Unlock()

	w.Header().Set("Content-Type", "application/json")
	if r.URL.Path != "/api/v1/query" {
		http.NotFound(w, r)
		return
	}
	if got := r.Header.Get("Authorization"); got != wantAuth {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"status":"error","errorType":"unauthorized","error":"bad credentials"}`))
		return
	}
	if wantHeader[0] != "" && r.Header.Get(wantHeader[0]) != wantHeader[1] {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"status":"error","errorType":"bad_data","error":"missing tenant header"}`))
		return
	}
	if isExact {
		// The success rate's denominator is a substring of the ratio: only an exact key
		// tells the two apart.
		answers = map[string]string{q: exact}
	}
	for sub, body := range answers {
		if strings.Contains(q, sub) {
			if body == "block" { // a server that never answers in time
				<-r.Context().Done()
				return
			}
			if strings.Contains(body, `"status":"error"`) {
				w.WriteHeader(http.StatusBadRequest)
			}
			_, _ = w.Write([]byte(body))
			return
		}
	}
	w.WriteHeader(http.StatusBadRequest)
	_, _ = w.Write([]byte(`{"status":"error","errorType":"bad_data","error":"unexpected query"}`))
}

func (f *fakeProm) set(sub, body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[sub] = body
}

// setExact answers query q, and only q, with body.
func (f *fakeProm) setExact(q, body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exact[q] = body
}

func (f *fakeProm) expectAuth(auth string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wantAuth = auth
}

func (f *fakeProm) lastQuery(t *testing.T) string {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.queries) == 0 {
		t.Fatal("no request reached the server")
	}
	return f.queries[len(f.queries)-1]
}

// sent returns a query received that contains sub.
func (f *fakeProm) sent(sub string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, q := range f.queries {
		if strings.Contains(q, sub) {
			return q, true
		}
	}
	return "", false
}

func (f *fakeProm) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.queries)
}

const (
	successRateSub = `envoy_response_code!~"5.*"`
	durationSub    = `histogram_quantile`
)

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func newReader(t *testing.T, objs ...client.Object) client.Reader {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := v1beta1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	return fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
}

func byMetric(results []Result) map[string]Result {
	m := map[string]Result{}
	for _, r := range results {
		m[r.Metric] = r
	}
	return m
}

// TestSeedOverPrivateCAWithBearerToken is the seed's setup: the main Prometheus behind a
// private CA and a token, with no image rebuild.
func TestSeedOverPrivateCAWithBearerToken(t *testing.T) {
	ca := newCA(t)
	prom := newFakeProm(t, &ca)
	prom.expectAuth("Bearer s3cret")
	prom.set(successRateSub, vector("99.5"))
	prom.set(durationSub, vector("742"))

	p := New(newReader(t), ProviderConfig{
		Address:         prom.URL,
		CAFile:          writeFile(t, "ca.crt", ca.pem),
		BearerTokenFile: writeFile(t, "token", []byte("s3cret\n")),
	})
	ctx := context.Background()
	got := p.Run(ctx, seedCanary())
	if len(got) != 2 {
		t.Fatalf("want 2 results, got %+v", got)
	}
	want := []Result{
		{Metric: "request-success-rate", Value: 99.5, Outcome: v1beta1.MetricPassed, Message: "request-success-rate 99.5 >= 99"},
		{Metric: "request-duration", Value: 742, Outcome: v1beta1.MetricFailed, Message: "request-duration 742 > 500"},
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("result %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	// The two queries run at once; the duration one is the one with the [30s] window.
	if q, ok := prom.sent("[30s]"); !ok || !strings.Contains(q, `envoy_cluster_name=~"alice-canary_apps-a-mesh-a_svc_[0-9a-zA-Z-]+"`) {
		t.Errorf("request-duration query sent: %q", q)
	}

	// A second round reuses the client (and its connections).
	p.Run(ctx, seedCanary())
	if n := len(p.clients.byKey); n != 1 {
		t.Errorf("%d cached clients, want 1", n)
	}
}

func TestTLSWithoutTheCAIsAnError(t *testing.T) {
	ca := newCA(t)
	prom := newFakeProm(t, &ca)
	prom.set(successRateSub, vector("100"))
	c := seedCanary()
	c.Spec.Analysis.Metrics = c.Spec.Analysis.Metrics[:1]

	r := New(newReader(t), ProviderConfig{Address: prom.URL}).Run(context.Background(), c)[0]
	if r.Outcome != v1beta1.MetricError || !strings.Contains(r.Message, "certificate") || !math.IsNaN(r.Value) {
		t.Errorf("got %+v, want an Error about the certificate", r)
	}
	r = New(newReader(t), ProviderConfig{Address: prom.URL, InsecureSkipVerify: true}).Run(context.Background(), c)[0]
	if r.Outcome != v1beta1.MetricPassed {
		t.Errorf("insecureSkipVerify: got %+v", r)
	}
}

func TestOutcomes(t *testing.T) {
	prom := newFakeProm(t, nil)
	down := newFakeProm(t, nil)
	down.Close()

	tests := []struct {
		name     string
		address  string
		answer   string
		onNoData v1beta1.NoDataPolicy
		want     v1beta1.MetricOutcome
		message  string
	}{
		{"value", prom.URL, vector("99.9"), "", v1beta1.MetricPassed, "request-success-rate 99.9 >= 99"},
		{"below threshold", prom.URL, vector("87.5"), "", v1beta1.MetricFailed, "request-success-rate 87.5 < 99"},
		{"empty vector fails by default", prom.URL, emptyVector, "", v1beta1.MetricNoData, "no values found for request-success-rate"},
		{"NaN fails by default", prom.URL, vector("NaN"), v1beta1.NoDataFail, v1beta1.MetricNoData, "no values found"},
		{"empty vector skipped", prom.URL, emptyVector, v1beta1.NoDataSkip, v1beta1.MetricSkipped, "skipped (onNoData: skip)"},
		{"NaN skipped", prom.URL, vector("NaN"), v1beta1.NoDataSkip, v1beta1.MetricSkipped, "skipped"},
		{"query error", prom.URL, `{"status":"error","errorType":"bad_data","error":"parse error at char 4"}`, "", v1beta1.MetricError, "parse error at char 4"},
		{"server down", down.URL, "", "", v1beta1.MetricError, "connection refused"},
		{"no address", "", "", "", v1beta1.MetricError, "no Prometheus address"},
		{"several series", prom.URL, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"99.1"]},{"metric":{"a":"2"},"value":[1,"1"]}]}}`,
			"", v1beta1.MetricError, "query returned 2 series; aggregate it (sum/avg/max) to one value"},
		{"scalar", prom.URL, `{"status":"success","data":{"resultType":"scalar","result":[1,"100"]}}`, "", v1beta1.MetricPassed, "100 >= 99"},
		{"matrix", prom.URL, `{"status":"success","data":{"resultType":"matrix","result":[]}}`, "", v1beta1.MetricError, "want an instant vector or a scalar"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prom.set(successRateSub, tt.answer)
			c := seedCanary()
			c.Spec.Analysis.Metrics = c.Spec.Analysis.Metrics[:1]
			c.Spec.Analysis.Metrics[0].OnNoData = tt.onNoData
			prom.setExact(trafficQuery(t, c, &c.Spec.Analysis.Metrics[0]), emptyVector) // no traffic either
			r := New(newReader(t), ProviderConfig{Address: tt.address}).Run(context.Background(), c)[0]
			if r.Outcome != tt.want || !strings.Contains(r.Message, tt.message) {
				t.Errorf("got %s %q, want %s containing %q", r.Outcome, r.Message, tt.want, tt.message)
			}
			if hasValue := r.Outcome == v1beta1.MetricPassed || r.Outcome == v1beta1.MetricFailed; hasValue == math.IsNaN(r.Value) {
				t.Errorf("value %v with outcome %s", r.Value, r.Outcome)
			}
		})
	}
}

func TestQueryTimeout(t *testing.T) {
	prom := newFakeProm(t, nil)
	prom.set(successRateSub, "block")
	c := seedCanary()
	c.Spec.Analysis.Metrics = c.Spec.Analysis.Metrics[:1]
	r := New(newReader(t), ProviderConfig{Address: prom.URL, Timeout: 50 * time.Millisecond}).Run(context.Background(), c)[0]
	if r.Outcome != v1beta1.MetricError || !strings.Contains(r.Message, "deadline exceeded") {
		t.Errorf("got %+v", r)
	}
}

func TestBearerTokenFileIsReReadWhenItChanges(t *testing.T) {
	prom := newFakeProm(t, nil)
	prom.set(successRateSub, vector("100"))
	tokenFile := writeFile(t, "token", []byte("first"))
	p := New(newReader(t), ProviderConfig{Address: prom.URL, BearerTokenFile: tokenFile})
	c := seedCanary()
	c.Spec.Analysis.Metrics = c.Spec.Analysis.Metrics[:1]

	prom.expectAuth("Bearer first")
	if r := p.Run(context.Background(), c)[0]; r.Outcome != v1beta1.MetricPassed {
		t.Fatalf("first token: %+v", r)
	}
	// The kubelet rotates a projected token in place; a new mtime is what the cache sees.
	if err := os.WriteFile(tokenFile, []byte("second"), 0o600); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(tokenFile, later, later); err != nil {
		t.Fatal(err)
	}
	prom.expectAuth("Bearer second")
	if r := p.Run(context.Background(), c)[0]; r.Outcome != v1beta1.MetricPassed {
		t.Fatalf("rotated token: %+v", r)
	}
}

// TestMetricTemplates covers templates, their providers, Secrets and where credentials go.
func TestMetricTemplates(t *testing.T) {
	ca := newCA(t)
	main := newFakeProm(t, nil)   // --metrics-server, with a token
	tenant := newFakeProm(t, &ca) // a template's own server, private CA and basic auth
	main.expectAuth("Bearer default-token")
	tenant.expectAuth("Basic " + basic("reader", "pa55"))
	tenant.wantHeader = [2]string{"X-Scope-OrgID", "team-a"}

	templates := []client.Object{
		&v1beta1.MetricTemplate{
			ObjectMeta: metav1.ObjectMeta{Name: "error-ratio", Namespace: "apps-a-mesh-a"},
			Spec: v1beta1.MetricTemplateSpec{
				Provider: v1beta1.MetricTemplateProvider{Type: "prometheus"},
				Query:    `errors{app="{{ target }}",ns="{{ namespace }}",dir="{{ variables.direction }}"}[{{ interval }}]`,
			},
		},
		&v1beta1.MetricTemplate{
			ObjectMeta: metav1.ObjectMeta{Name: "tenant-latency", Namespace: "monitoring"},
			Spec: v1beta1.MetricTemplateSpec{
				Provider: v1beta1.MetricTemplateProvider{
					Type: "prometheus", Address: tenant.URL, SecretRef: &corev1.LocalObjectReference{Name: "tenant-creds"},
					Headers: v1beta1.ProviderHeaders{"X-Scope-OrgID": {"team-a"}}, Timeout: "5s",
				},
				Query: `latency{service="{{ service }}",canary="{{ name }}"}`,
			},
		},
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "tenant-creds", Namespace: "monitoring"},
			Data:       map[string][]byte{"username": []byte("reader"), "password": []byte("pa55"), "ca.crt": ca.pem},
		},
	}
	p := New(newReader(t, templates...), ProviderConfig{
		Address:         main.URL,
		BearerTokenFile: writeFile(t, "token", []byte("default-token")),
	})
	main.set(`errors{`, vector("0.5"))
	tenant.set(`latency{`, vector("120"))

	c := seedCanary()
	c.Spec.Analysis.Metrics = []v1beta1.CanaryMetric{
		{Name: "error ratio", TemplateRef: &v1beta1.CrossNamespaceObjectReference{Name: "error-ratio"},
			Threshold: 1, Interval: "2m", TemplateVariables: map[string]string{"direction": "inbound"}},
		{Name: "tenant latency", TemplateRef: &v1beta1.CrossNamespaceObjectReference{Name: "tenant-latency", Namespace: "monitoring"},
			ThresholdRange: &v1beta1.CanaryThresholdRange{Max: ptr(100)}},
		{Name: "undefined variable", TemplateRef: &v1beta1.CrossNamespaceObjectReference{Name: "error-ratio"}},
		{Name: "missing template", TemplateRef: &v1beta1.CrossNamespaceObjectReference{Name: "nope"}},
		{Name: "typo-builtin"},
	}
	got := byMetric(p.Run(context.Background(), c))

	if r := got["error ratio"]; r.Outcome != v1beta1.MetricPassed || r.Value != 0.5 || r.Message != "error ratio 0.5 <= 1" {
		t.Errorf("error ratio: %+v", r)
	}
	if q := main.lastQuery(t); q != `errors{app="alice",ns="apps-a-mesh-a",dir="inbound"}[2m]` {
		t.Errorf("error ratio query: %s", q)
	}
	if r := got["tenant latency"]; r.Outcome != v1beta1.MetricFailed || r.Message != "tenant latency 120 > 100" {
		t.Errorf("tenant latency: %+v", r)
	}
	if q := tenant.lastQuery(t); q != `latency{service="alice",canary="alice"}` {
		t.Errorf("tenant query: %s", q)
	}
	for name, want := range map[string]string{
		"undefined variable": `map has no entry for key "direction"`,
		"missing template":   `get MetricTemplate apps-a-mesh-a/nope`,
		"typo-builtin":       "is not a builtin metric",
	} {
		if r := got[name]; r.Outcome != v1beta1.MetricError || !strings.Contains(r.Message, want) {
			t.Errorf("%s: got %+v, want an Error containing %q", name, r, want)
		}
	}
}

func TestDefaultCredentialsStayWithTheDefaultServer(t *testing.T) {
	main := newFakeProm(t, nil)
	other := newFakeProm(t, nil)
	main.expectAuth("Bearer default-token")
	other.expectAuth("") // must receive no credentials
	main.set(successRateSub, vector("100"))
	other.set(successRateSub, vector("100"))
	p := New(newReader(t), ProviderConfig{Address: main.URL, BearerTokenFile: writeFile(t, "token", []byte("default-token"))})

	c := seedCanary()
	c.Spec.Analysis.Metrics = c.Spec.Analysis.Metrics[:1]
	if r := p.Run(context.Background(), c)[0]; r.Outcome != v1beta1.MetricPassed {
		t.Fatalf("default server: %+v", r)
	}
	c.Spec.MetricsServer = other.URL
	if r := p.Run(context.Background(), c)[0]; r.Outcome != v1beta1.MetricPassed {
		t.Fatalf("spec.metricsServer: %+v", r)
	}
	if n := other.count(); n != 1 {
		t.Errorf("spec.metricsServer got %d requests, want 1", n)
	}
}

func TestTemplateProviderErrors(t *testing.T) {
	c := seedCanary()
	objs := []client.Object{
		&v1beta1.MetricTemplate{
			ObjectMeta: metav1.ObjectMeta{Name: "no-secret", Namespace: c.Namespace},
			Spec: v1beta1.MetricTemplateSpec{Query: "up", Provider: v1beta1.MetricTemplateProvider{
				Address: "http://127.0.0.1:1", SecretRef: &corev1.LocalObjectReference{Name: "absent"}}},
		},
		&v1beta1.MetricTemplate{
			ObjectMeta: metav1.ObjectMeta{Name: "bad-ca", Namespace: c.Namespace},
			Spec: v1beta1.MetricTemplateSpec{Query: "up", Provider: v1beta1.MetricTemplateProvider{
				Address: "https://127.0.0.1:1", SecretRef: &corev1.LocalObjectReference{Name: "bad-ca"}}},
		},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bad-ca", Namespace: c.Namespace},
			Data: map[string][]byte{"ca.crt": []byte("not a certificate")}},
		&v1beta1.MetricTemplate{
			ObjectMeta: metav1.ObjectMeta{Name: "datadog", Namespace: c.Namespace},
			Spec:       v1beta1.MetricTemplateSpec{Query: "up", Provider: v1beta1.MetricTemplateProvider{Type: "datadog"}},
		},
	}
	c.Spec.Analysis.Metrics = nil
	for _, o := range objs {
		if mt, ok := o.(*v1beta1.MetricTemplate); ok {
			c.Spec.Analysis.Metrics = append(c.Spec.Analysis.Metrics,
				v1beta1.CanaryMetric{Name: mt.Name, TemplateRef: &v1beta1.CrossNamespaceObjectReference{Name: mt.Name}})
		}
	}
	got := byMetric(New(newReader(t, objs...), ProviderConfig{}).Run(context.Background(), c))
	for name, want := range map[string]string{
		"no-secret": "get provider Secret apps-a-mesh-a/absent",
		"bad-ca":    "holds no PEM certificate",
		"datadog":   `provider type "datadog" is not served`,
	} {
		if r := got[name]; r.Outcome != v1beta1.MetricError || !strings.Contains(r.Message, want) {
			t.Errorf("%s: got %+v, want an Error containing %q", name, r, want)
		}
	}
}

func TestRunWithoutAnalysis(t *testing.T) {
	c := seedCanary()
	c.Spec.Analysis = nil
	if got := New(newReader(t), ProviderConfig{}).Run(context.Background(), c); len(got) != 0 {
		t.Errorf("got %+v", got)
	}
}

func basic(user, pass string) string {
	r, _ := http.NewRequest(http.MethodGet, "http://x", nil)
	r.SetBasicAuth(user, pass)
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Basic ")
}

// jsonOK guards the fixtures above against typos.
func TestFixturesAreJSON(t *testing.T) {
	for _, s := range []string{vector("1"), emptyVector} {
		if !json.Valid([]byte(s)) {
			t.Errorf("invalid fixture %s", s)
		}
	}
}
