package meshsim

import (
	"bytes"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// LatencyBucketsMs are the upper bounds of envoy_cluster_upstream_rq_time, in milliseconds.
// histogram_quantile interpolates inside a bucket, so a p99 reads close to the upper bound
// of the bucket the latency falls in; the bounds are dense around the usual 500 ms
// threshold so that a 300 ms release reads below it and a 550 ms one above it.
var LatencyBucketsMs = []float64{
	1, 2.5, 5, 10, 25, 50, 75, 100, 150, 200, 250, 300, 400, 450, 500, 550, 600, 750,
	1000, 1500, 2500, 5000, 10000, 30000,
}

// Label names of the callers' Envoy stats. kuma_io_mesh and namespace are the caller's, as
// Kuma's Prometheus integration labels them.
const (
	labelCluster = "envoy_cluster_name"
	labelCode    = "envoy_response_code"
	labelMesh    = "kuma_io_mesh"
	labelNS      = "namespace"
)

type metrics struct {
	registry *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		// Envoy's name, without the _total suffix the Prometheus conventions ask for: the
		// seed's queries use it as is.
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envoy_cluster_upstream_rq",
			Help: "Requests sent to an upstream cluster, by response code (simulated).",
		}, []string{labelCluster, labelCode, labelMesh, labelNS}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "envoy_cluster_upstream_rq_time",
			Help:    "Upstream request time in milliseconds (simulated).",
			Buckets: LatencyBucketsMs,
		}, []string{labelCluster, labelMesh, labelNS}),
	}
	m.registry.MustRegister(m.requests, m.latency)
	return m
}

// ServeHTTP writes the classic text format (0.0.4) whatever the scraper asks for. promhttp
// would negotiate OpenMetrics or protobuf with Prometheus 3; the OpenMetrics encoder
// appends _total to counter samples, which would rename envoy_cluster_upstream_rq.
func (m *metrics) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	mfs, err := m.registry.Gather()
	if err != nil {
		http.Error(w, "gather metrics: "+err.Error(), http.StatusInternalServerError)
		return
	}
	format := expfmt.NewFormat(expfmt.TypeTextPlain)
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, format)
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			http.Error(w, "encode metrics: "+err.Error(), http.StatusInternalServerError)
			return
		}
	}
	w.Header().Set("Content-Type", string(format))
	_, _ = w.Write(buf.Bytes())
}
