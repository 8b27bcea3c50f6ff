package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// interceptReview is the costliest Deployment request: a new template to pause.
func interceptReview(tb testing.TB) []byte {
	return admissionReview(tb, review(tb, admissionv1.Update, fluxUser, deploymentsResource, managed(depV2, revV1), managed(depV1, revV1)))
}

// BenchmarkDeploymentAdmission serves the same AdmissionReview over HTTPS to the
// Deployment webhook and to a no-op controller-runtime webhook, alternating requests on
// one client so both see the same machine, and reports each one's p50/p99 latency and
// the ratios. One op is one request to each. It reports; it never fails on timing.
func BenchmarkDeploymentAdmission(b *testing.B) {
	body := interceptReview(b)
	serve := func(h admission.Handler) *httptest.Server {
		s := httptest.NewUnstartedServer((&admission.Webhook{Handler: h}).WithRecoverPanic(true))
		s.EnableHTTP2 = false // as the real server (cmd/coalmine/app turns h2 off)
		s.StartTLS()
		b.Cleanup(s.Close)
		return s
	}
	deploy := serve(&DeploymentMutator{ControllerUsername: controllerUser})
	noop := serve(admission.HandlerFunc(func(context.Context, admission.Request) admission.Response {
		return admission.Allowed("")
	}))
	pool := x509.NewCertPool()
	pool.AddCert(deploy.Certificate())
	pool.AddCert(noop.Certificate())
	c := &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 4,
	}}
	b.Cleanup(c.CloseIdleConnections)

	post := func(url string) (time.Duration, []byte) {
		start := time.Now()
		resp, err := c.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		out, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d: %v", resp.StatusCode, err)
		}
		return time.Since(start), out
	}
	// Warm up connections and check the webhook does its work.
	for range 50 {
		post(noop.URL + PathMutateDeployment)
		_, out := post(deploy.URL + PathMutateDeployment)
		var ar admissionv1.AdmissionReview
		if err := json.Unmarshal(out, &ar); err != nil || ar.Response == nil || len(ar.Response.Patch) == 0 {
			b.Fatalf("deployment webhook did not patch: %s", out)
		}
	}

	var dep, nop []time.Duration
	for b.Loop() {
		d, _ := post(deploy.URL + PathMutateDeployment)
		n, _ := post(noop.URL + PathMutateDeployment)
		dep, nop = append(dep, d), append(nop, n)
	}
	dp50, dp99 := percentiles(dep)
	np50, np99 := percentiles(nop)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	b.ReportMetric(us(dp50), "deploy-p50-µs")
	b.ReportMetric(us(dp99), "deploy-p99-µs")
	b.ReportMetric(us(np50), "noop-p50-µs")
	b.ReportMetric(us(np99), "noop-p99-µs")
	if np50 > 0 && np99 > 0 {
		b.ReportMetric(float64(dp50)/float64(np50), "p50-ratio")
		b.ReportMetric(float64(dp99)/float64(np99), "p99-ratio")
	}
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)*50/100], s[min(len(s)-1, len(s)*99/100)]
}

// BenchmarkDeploymentMutatorHandle is the handler's own cost, without HTTP or decoding
// of the review: two typed decodes, two template hashes and the patch.
func BenchmarkDeploymentMutatorHandle(b *testing.B) {
	for _, bc := range []struct {
		name string
		req  admission.Request
	}{
		{"intercept", review(b, admissionv1.Update, fluxUser, deploymentsResource, managed(depV2, revV1), managed(depV1, revV1))},
		{"untouched replica change", review(b, admissionv1.Update, adminUser, deploymentsResource, managed(depV1, revV1), managed(depV1, revV1))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			m := &DeploymentMutator{ControllerUsername: controllerUser}
			b.ReportAllocs()
			for b.Loop() {
				if resp := m.Handle(context.Background(), bc.req); !resp.Allowed {
					b.Fatal(resp.Result)
				}
			}
		})
	}
}
