package meshsim

import (
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
)

// warmUp is how long a new series is exposed at zero before it counts. Prometheus' rate()
// cannot see the increase up to a series' first sample, so a series must be scraped at 0
// once (the sandbox scrapes each second). Requests are held back, not lost.
const warmUp = time.Second

// seriesKey is one caller's view of one Envoy cluster. The exposed series are the
// namespace's (callers of a namespace share them, as Kuma's per-namespace view does);
// caller keeps the counts of each apart for CallerSnapshot.
type seriesKey struct {
	cluster   string
	namespace string
	mesh      string
	caller    string
}

type seriesState struct {
	since   time.Time
	pending int64 // requests held during warm-up
	errAcc  int64 // fractional errors carried over, in ppm of a request
	errSeq  uint64
	rr      int // next pod, round robin
	counts  Counts

	ok, err500, err503 prometheus.Counter
	latency            prometheus.Observer
}

// callerState carries the fractional shares of a caller's split over from step to step.
type callerState struct {
	split []backendWeight
	owed  []int64 // per split entry, in 1/sum(weights) of a request
}

// send accounts n requests of one caller.
func (s *Simulator) send(logger logr.Logger, now time.Time, m *mesh, c call, n int64) {
	keys := make([]seriesKey, len(c.split))
	for i, b := range c.split {
		keys[i] = seriesKey{cluster: b.tag, namespace: c.apex.namespace, mesh: c.mesh, caller: c.caller.name}
		if s.series[keys[i]] == nil {
			s.series[keys[i]] = s.newSeries(keys[i], now)
			logger.V(1).Info("Envoy cluster appeared", "caller", c.apex.tag, "cluster", b.tag)
		}
	}
	for i, k := range s.distribute(c, n) {
		s.deliver(now, s.series[keys[i]], k, m.endpoints[c.split[i].tag])
	}
}

func (s *Simulator) newSeries(k seriesKey, now time.Time) *seriesState {
	// All three codes exist from the start, so an error series is never born at a non-zero
	// value (which rate() would not count).
	return &seriesState{
		since:   now,
		ok:      s.metrics.requests.WithLabelValues(k.cluster, "200", k.mesh, k.namespace),
		err500:  s.metrics.requests.WithLabelValues(k.cluster, "500", k.mesh, k.namespace),
		err503:  s.metrics.requests.WithLabelValues(k.cluster, "503", k.mesh, k.namespace),
		latency: s.metrics.latency.WithLabelValues(k.cluster, k.mesh, k.namespace),
	}
}

// distribute splits n requests by the weights, exactly over time: each entry is owed its
// share, whole requests go out now, and the requests left over by rounding go to the
// entries owed the most. Sum of owed stays 0, so no request is lost or invented.
func (s *Simulator) distribute(c call, n int64) []int64 {
	st := s.callers[c.key()]
	if st == nil || !sameSplit(st.split, c.split) {
		// New weights start afresh; the carried fractions were shares of the old ones.
		st = &callerState{split: c.split, owed: make([]int64, len(c.split))}
		s.callers[c.key()] = st
	}
	out := make([]int64, len(c.split))
	var total int64
	for _, b := range c.split {
		if b.weight > 0 {
			total += b.weight
		}
	}
	if total == 0 || n == 0 {
		return out
	}
	left := n
	for i, b := range c.split {
		if b.weight <= 0 {
			continue
		}
		st.owed[i] += n * b.weight
		out[i] = st.owed[i] / total
		st.owed[i] -= out[i] * total
		left -= out[i]
	}
	for ; left > 0; left-- {
		best := -1
		for i, b := range c.split {
			if b.weight > 0 && (best < 0 || st.owed[i] > st.owed[best]) {
				best = i
			}
		}
		out[best]++
		st.owed[best] -= total
	}
	return out
}

func sameSplit(a, b []backendWeight) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// deliver counts n requests on a cluster whose Ready pods are eps: errors at the pods'
// mean error rate, alternating 500 and 503, each request's latency that of the pod it
// reached (round robin). Without pods, Envoy answers 503 with no upstream time.
func (s *Simulator) deliver(now time.Time, st *seriesState, n int64, eps []endpoint) {
	st.pending += n
	if now.Sub(st.since) < warmUp || st.pending == 0 {
		return
	}
	n, st.pending = st.pending, 0
	st.counts.Requests += uint64(n)

	if len(eps) == 0 {
		st.err503.Add(float64(n))
		st.counts.Errors += uint64(n)
		return
	}

	var sumPPM int64
	for _, ep := range eps {
		sumPPM += ep.errPPM
	}
	st.errAcc += n * (sumPPM / int64(len(eps)))
	errs := st.errAcc / ppm
	st.errAcc -= errs * ppm

	// Errors number errSeq, errSeq+1, ...: the even ones are 500s.
	e500 := errs / 2
	if errs%2 == 1 && st.errSeq%2 == 0 {
		e500++
	}
	st.errSeq += uint64(errs)
	st.ok.Add(float64(n - errs))
	st.err500.Add(float64(e500))
	st.err503.Add(float64(errs - e500))
	st.counts.Errors += uint64(errs)

	per, extra := n/int64(len(eps)), n%int64(len(eps))
	for j := range eps {
		ep := eps[(st.rr+j)%len(eps)]
		k := per
		if int64(j) < extra {
			k++
		}
		for ; k > 0; k-- {
			st.latency.Observe(ep.latencyMs)
		}
	}
	st.rr = (st.rr + int(extra)) % len(eps)
}
