//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protowire"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// reqKey classifies one apiserver request: the namespace it concerns ("" for a
// cluster-wide list or watch, the app namespace for a TrafficRoute named
// <apex>.<namespace>), the verb and the resource (with its subresource, "canaries/status").
type reqKey struct {
	namespace, verb, resource string
}

// Verbs of reqKey besides the Kubernetes ones.
const (
	verbDiscovery = "discovery"
	verbOther     = "other"
)

func isWrite(verb string) bool {
	switch verb {
	case "create", "update", "patch", "delete", "deletecollection":
		return true
	}
	return false
}

// classify turns a request to the apiserver into its reqKey, as the apiserver's own
// RequestInfo would, for the paths coalmine uses.
func classify(method string, u *url.URL) reqKey {
	segs := strings.Split(strings.Trim(u.Path, "/"), "/")
	var rest []string
	switch {
	case len(segs) >= 2 && segs[0] == "api":
		rest = segs[2:]
	case len(segs) >= 3 && segs[0] == "apis":
		rest = segs[3:]
	}
	if len(rest) == 0 || rest[0] == "" {
		return reqKey{verb: verbDiscovery}
	}
	var k reqKey
	if rest[0] == "namespaces" && len(rest) >= 3 {
		k.namespace, rest = rest[1], rest[2:]
	}
	k.resource = rest[0]
	name := ""
	if len(rest) >= 2 {
		name = rest[1]
	}
	if len(rest) >= 3 {
		k.resource += "/" + rest[2]
	}
	// Cluster-scoped TrafficRoutes are named <apex>.<namespace>: count them with the app.
	if k.namespace == "" && k.resource == "trafficroutes" {
		if i := strings.LastIndexByte(name, '.'); i >= 0 {
			k.namespace = name[i+1:]
		}
	}
	switch method {
	case http.MethodGet:
		switch {
		case u.Query().Get("watch") == "true" || u.Query().Get("watch") == "1":
			k.verb = "watch"
		case name == "":
			k.verb = "list"
		default:
			k.verb = "get"
		}
	case http.MethodPost:
		k.verb = "create"
	case http.MethodPut:
		k.verb = "update"
	case http.MethodPatch:
		k.verb = "patch"
	case http.MethodDelete:
		if name == "" {
			k.verb = "deletecollection"
		} else {
			k.verb = "delete"
		}
	default:
		k.verb = verbOther
	}
	return k
}

// requestCounter counts the requests of one rest.Config, by reqKey, and the 409 Conflict
// answers among them.
type requestCounter struct {
	mu        sync.Mutex
	requests  map[reqKey]int64
	conflicts map[reqKey]int64
	// micros sums the answer times of the requests other than watches, in µs.
	micros map[reqKey]int64
	last   time.Time
}

func newRequestCounter() *requestCounter {
	return &requestCounter{requests: map[reqKey]int64{}, conflicts: map[reqKey]int64{}, micros: map[reqKey]int64{}}
}

// wrap is a rest.Config WrapTransport: it sees every request the config's clients make,
// informers, leader election and the event broadcaster included.
func (c *requestCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		k := classify(r.Method, r.URL)
		c.mu.Lock()
		c.requests[k]++
		if k.resource != "leases" {
			c.last = time.Now()
		}
		c.mu.Unlock()
		start := time.Now()
		resp, err := rt.RoundTrip(r)
		took := time.Since(start).Microseconds()
		c.mu.Lock()
		if k.verb != "watch" {
			c.micros[k] += took
		}
		if err == nil && resp.StatusCode == http.StatusConflict {
			c.conflicts[k]++
		}
		c.mu.Unlock()
		return resp, err
	})
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// requestCounts is a snapshot of a requestCounter, or the difference of two.
type requestCounts struct {
	requests, conflicts, micros map[reqKey]int64
}

func (c *requestCounter) snapshot() requestCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return requestCounts{requests: maps.Clone(c.requests), conflicts: maps.Clone(c.conflicts), micros: maps.Clone(c.micros)}
}

// meanMillis is the mean answer time of the requests of namespace with verb and
// resource, in ms, or -1 if there were none.
func (a requestCounts) meanMillis(namespace, verb, resource string) float64 {
	k := reqKey{namespace: namespace, verb: verb, resource: resource}
	if a.requests[k] == 0 {
		return -1
	}
	return float64(a.micros[k]) / 1000 / float64(a.requests[k])
}

// quietSince is the time of the last request other than a leader-election Lease's.
func (c *requestCounter) quietSince() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

func (a requestCounts) minus(b requestCounts) requestCounts {
	sub := func(x, y map[reqKey]int64) map[reqKey]int64 {
		out := map[reqKey]int64{}
		for k, v := range x {
			if d := v - y[k]; d != 0 {
				out[k] = d
			}
		}
		return out
	}
	return requestCounts{requests: sub(a.requests, b.requests), conflicts: sub(a.conflicts, b.conflicts), micros: sub(a.micros, b.micros)}
}

// apiTally sums requestCounts of one namespace (or of all, namespace "*") by kind.
type apiTally struct {
	gets, listsWatches, writes, eventWrites, conflicts int64
	// by counts every request by "verb resource".
	by map[string]int64
}

func (a requestCounts) tally(namespace string) apiTally {
	return a.tallyWhere(func(k reqKey) bool { return namespace == "*" || k.namespace == namespace })
}

// tallyWhere sums the requests keep accepts.
func (a requestCounts) tallyWhere(keep func(reqKey) bool) apiTally {
	t := apiTally{by: map[string]int64{}}
	for k, v := range a.requests {
		if !keep(k) {
			continue
		}
		t.by[k.verb+" "+k.resource] += v
		switch {
		case k.verb == "get":
			t.gets += v
		case k.verb == "list" || k.verb == "watch":
			t.listsWatches += v
		case isWrite(k.verb) && k.resource == "events":
			t.eventWrites += v
		case isWrite(k.verb):
			t.writes += v
		}
	}
	for k, v := range a.conflicts {
		if keep(k) {
			t.conflicts += v
		}
	}
	return t
}

// queryCounter is a reverse proxy in front of Prometheus that counts the queries going
// through it, by the app namespace named in the query.
type queryCounter struct {
	proxy *httputil.ReverseProxy

	mu    sync.Mutex
	total int64
	byNS  map[string]int64
	// microsByNS sums the answer times of the queries, by namespace, in µs.
	microsByNS map[string]int64
	byPath     map[string]int64
	example    string
}

// The builtin queries select envoy_cluster_name=~"<app>-canary_<namespace>_svc_...".
var canaryClusterNS = regexp.MustCompile(`-canary_([a-z0-9-]+)_svc`)

func newQueryCounter(prometheusURL string) (*queryCounter, error) {
	u, err := url.Parse(prometheusURL)
	if err != nil {
		return nil, fmt.Errorf("parse Prometheus URL: %w", err)
	}
	return &queryCounter{
		proxy:      httputil.NewSingleHostReverseProxy(u),
		byNS:       map[string]int64{},
		microsByNS: map[string]int64{},
		byPath:     map[string]int64{},
	}, nil
}

func (q *queryCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/api/v1/query") {
		// client_golang POSTs the query as a form; read it and put the body back.
		form := r.URL.Query()
		if r.Body != nil && r.Method == http.MethodPost {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if v, err := url.ParseQuery(string(body)); err == nil {
				for k, vs := range v {
					form[k] = append(form[k], vs...)
				}
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
		}
		query := form.Get("query")
		ns := ""
		if m := canaryClusterNS.FindStringSubmatch(query); m != nil {
			ns = m[1]
		}
		q.mu.Lock()
		q.total++
		q.byNS[ns]++
		q.byPath[r.URL.Path]++
		if q.example == "" {
			q.example = query
		}
		q.mu.Unlock()
		start := time.Now()
		q.proxy.ServeHTTP(w, r)
		q.mu.Lock()
		q.microsByNS[ns] += time.Since(start).Microseconds()
		q.mu.Unlock()
		return
	}
	q.proxy.ServeHTTP(w, r)
}

// micros is a snapshot of the summed answer times by namespace.
func (q *queryCounter) micros() map[string]int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return maps.Clone(q.microsByNS)
}

func (q *queryCounter) snapshot() map[string]int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := maps.Clone(q.byNS)
	out["*"] = q.total
	return out
}

// memUsage is the process's memory after a full collection that returned freed pages to
// the OS, so RSS follows the live heap rather than garbage.
type memUsage struct {
	heapInuse, rss uint64
	// heapAlloc is the bytes of live objects. HeapInuse also counts the free room of the
	// spans they sit in, which grows with the garbage made meanwhile: the two together
	// tell live growth from scattering.
	heapAlloc uint64
}

func measureMemory() memUsage {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memUsage{heapInuse: ms.HeapInuse, rss: readRSS(), heapAlloc: ms.HeapAlloc}
}

// readRSS is VmRSS of this process in bytes (0 if it cannot be read).
func readRSS() uint64 { return readRSSOf("self") }

// readRSSOf is VmRSS of /proc/<pid>/status in bytes.
func readRSSOf(pid string) uint64 {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// cpuTime is the user+system CPU time of this process (all threads), from getrusage.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loopStats are the progression loop's controller-runtime metrics, read from this
// process's registry: reconciles and their time, and time Canaries waited in the queue.
type loopStats struct {
	reconciles, reconcileSeconds float64
	queued, queueSeconds         float64
}

func readLoopStats() loopStats {
	var s loopStats
	mfs, err := crmetrics.Registry.Gather()
	if err != nil {
		return s
	}
	label := func(pairs []*dto.LabelPair, name string) string {
		for _, p := range pairs {
			if p.GetName() == name {
				return p.GetValue()
			}
		}
		return ""
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch {
			case mf.GetName() == "controller_runtime_reconcile_time_seconds" && label(m.GetLabel(), "controller") == "canary":
				s.reconciles += float64(m.GetHistogram().GetSampleCount())
				s.reconcileSeconds += m.GetHistogram().GetSampleSum()
			case mf.GetName() == "workqueue_queue_duration_seconds" && label(m.GetLabel(), "name") == "canary":
				s.queued += float64(m.GetHistogram().GetSampleCount())
				s.queueSeconds += m.GetHistogram().GetSampleSum()
			}
		}
	}
	return s
}

func (a loopStats) minus(b loopStats) loopStats {
	return loopStats{
		reconciles: a.reconciles - b.reconciles, reconcileSeconds: a.reconcileSeconds - b.reconcileSeconds,
		queued: a.queued - b.queued, queueSeconds: a.queueSeconds - b.queueSeconds,
	}
}

func (a loopStats) String() string {
	mean := func(sum, n float64) float64 {
		if n == 0 {
			return 0
		}
		return sum / n * 1000
	}
	return fmt.Sprintf("%.0f reconciles, mean %.1f ms each, mean queue wait %.1f ms",
		a.reconciles, mean(a.reconcileSeconds, a.reconciles), mean(a.queueSeconds, a.queued))
}

// Coalmine's goroutines carry this pprof label (goroutines inherit their creator's), so a
// CPU profile tells coalmine's CPU from the benchmark's own.
const (
	labelComponent = "component"
	labelCoalmine  = "coalmine"
)

// cpuProfile is a CPU profile of a window; an empty one if profiling was already on (go
// test -cpuprofile).
type cpuProfile struct {
	name string
	buf  bytes.Buffer
	on   bool
}

func startCPUProfile(name string) *cpuProfile {
	p := &cpuProfile{name: name}
	p.on = pprof.StartCPUProfile(&p.buf) == nil
	return p
}

// finish stops the profile and splits its samples: CPU of goroutines labelled coalmine,
// and of all goroutines. Background GC workers carry no label, so coalmine's share
// excludes its part of the collector's background work (its allocation assists count).
func (p *cpuProfile) finish() (coalmine, total time.Duration, ok bool) {
	if !p.on {
		return 0, 0, false
	}
	pprof.StopCPUProfile()
	saveProfile("cpu-"+p.name+".pprof", p.buf.Bytes())
	c, t, err := labelledCPU(p.buf.Bytes(), labelComponent, labelCoalmine)
	if err != nil {
		return 0, 0, false
	}
	return c, t, true
}

// saveProfile writes a profile into $COALMINE_BENCH_PROFILE_DIR, if set, for go tool pprof.
func saveProfile(name string, data []byte) {
	dir := os.Getenv("COALMINE_BENCH_PROFILE_DIR")
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err == nil {
		_ = os.WriteFile(filepath.Join(dir, name), data, 0o644)
	}
}

// saveHeapProfile writes the heap profile (in-use after a collection) like saveProfile.
func saveHeapProfile(name string) {
	if os.Getenv("COALMINE_BENCH_PROFILE_DIR") == "" {
		return
	}
	runtime.GC()
	var buf bytes.Buffer
	if err := pprof.Lookup("heap").WriteTo(&buf, 0); err == nil {
		saveProfile(name, buf.Bytes())
	}
}

// saveHeapDump writes runtime/debug.WriteHeapDump into the profile dir when
// COALMINE_BENCH_HEAPDUMP is set. Unlike a heap profile it lists every object in the spans
// it sits in, so the free room that HeapInuse counts beyond HeapAlloc can be told by size
// class (go run ./bench/heaproom).
func saveHeapDump(name string) {
	dir := os.Getenv("COALMINE_BENCH_PROFILE_DIR")
	if dir == "" || os.Getenv("COALMINE_BENCH_HEAPDUMP") == "" {
		return
	}
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		return
	}
	defer f.Close()
	debug.WriteHeapDump(f.Fd())
}

// labelledCPU reads a gzipped pprof profile (profile.proto) with just enough of the
// format to sum the cpu/nanoseconds value of samples, in all and of those carrying the
// label key=value.
func labelledCPU(gz []byte, key, value string) (labelled, total time.Duration, err error) {
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return 0, 0, fmt.Errorf("open profile: %w", err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		return 0, 0, fmt.Errorf("read profile: %w", err)
	}
	type sample struct {
		values []int64
		labels [][2]int64 // key, str indices
	}
	var (
		samples     []sample
		strs        []string
		sampleTypes [][2]int64 // type, unit indices
	)
	err = eachField(data, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		switch num {
		case 1: // sample_type
			var vt [2]int64
			err := eachField(v, func(n protowire.Number, _ protowire.Type, _ []byte, x uint64) error {
				if n == 1 || n == 2 {
					vt[n-1] = int64(x)
				}
				return nil
			})
			sampleTypes = append(sampleTypes, vt)
			return err
		case 2: // sample
			var s sample
			err := eachField(v, func(n protowire.Number, t protowire.Type, b []byte, x uint64) error {
				switch n {
				case 2: // value, packed or not
					if t == protowire.BytesType {
						for len(b) > 0 {
							u, m := protowire.ConsumeVarint(b)
							if m < 0 {
								return protowire.ParseError(m)
							}
							s.values, b = append(s.values, int64(u)), b[m:]
						}
					} else {
						s.values = append(s.values, int64(x))
					}
				case 3: // label
					var l [2]int64
					err := eachField(b, func(n protowire.Number, _ protowire.Type, _ []byte, x uint64) error {
						if n == 1 || n == 2 {
							l[n-1] = int64(x)
						}
						return nil
					})
					if err != nil {
						return err
					}
					s.labels = append(s.labels, l)
				}
				return nil
			})
			samples = append(samples, s)
			return err
		case 6: // string_table
			strs = append(strs, string(v))
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("parse profile: %w", err)
	}
	str := func(i int64) string {
		if i < 0 || int(i) >= len(strs) {
			return ""
		}
		return strs[i]
	}
	idx := -1
	for i, st := range sampleTypes {
		if str(st[0]) == "cpu" && str(st[1]) == "nanoseconds" {
			idx = i
		}
	}
	if idx < 0 {
		return 0, 0, fmt.Errorf("parse profile: no cpu/nanoseconds sample type")
	}
	for _, s := range samples {
		if idx >= len(s.values) {
			continue
		}
		total += time.Duration(s.values[idx])
		for _, l := range s.labels {
			if str(l[0]) == key && str(l[1]) == value {
				labelled += time.Duration(s.values[idx])
				break
			}
		}
	}
	return labelled, total, nil
}

// eachField calls fn for every field of a protobuf message: bytes fields with their
// contents, varint and fixed fields with their value.
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var (
			v []byte
			x uint64
		)
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.Fixed32Type:
			var y uint32
			y, n = protowire.ConsumeFixed32(b)
			x = uint64(y)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name, method, url string
		want              reqKey
	}{
		{"get a canary", "GET", "/apis/coalmine.dev/v1beta1/namespaces/ns1/canaries/a", reqKey{"ns1", "get", "canaries"}},
		{"status update", "PUT", "/apis/coalmine.dev/v1beta1/namespaces/ns1/canaries/a/status", reqKey{"ns1", "update", "canaries/status"}},
		{"cluster-wide watch", "GET", "/apis/apps/v1/deployments?allowWatchBookmarks=true&watch=true", reqKey{"", "watch", "deployments"}},
		{"cluster-wide list", "GET", "/api/v1/services?limit=500", reqKey{"", "list", "services"}},
		{"namespaced list", "GET", "/api/v1/namespaces/ns1/services", reqKey{"ns1", "list", "services"}},
		{"get a namespace", "GET", "/api/v1/namespaces/ns1", reqKey{"", "get", "namespaces"}},
		{"trafficroute counts with its app namespace", "PATCH", "/apis/kuma.io/v1alpha1/trafficroutes/app.ns1", reqKey{"ns1", "patch", "trafficroutes"}},
		{"event", "POST", "/apis/events.k8s.io/v1/namespaces/ns1/events", reqKey{"ns1", "create", "events"}},
		{"lease renewal", "PUT", "/apis/coordination.k8s.io/v1/namespaces/coalmine-system/leases/x", reqKey{"coalmine-system", "update", "leases"}},
		{"delete", "DELETE", "/apis/apps/v1/namespaces/ns1/deployments/a-canary", reqKey{"ns1", "delete", "deployments"}},
		{"discovery", "GET", "/apis/apps/v1", reqKey{verb: verbDiscovery}},
		{"root discovery", "GET", "/api", reqKey{verb: verbDiscovery}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := url.Parse(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			if got := classify(tc.method, u); got != tc.want {
				t.Errorf("classify(%s %s) = %+v, want %+v", tc.method, tc.url, got, tc.want)
			}
		})
	}
}

// TestLabelledCPU profiles a labelled busy goroutine next to an unlabelled one and checks
// the reader finds the labelled share.
func TestLabelledCPU(t *testing.T) {
	if testing.Short() {
		t.Skip("profiles for half a second")
	}
	p := startCPUProfile("test")
	if !p.on {
		t.Skip("CPU profiling already on")
	}
	spin := func(d time.Duration) {
		for end := time.Now().Add(d); time.Now().Before(end); {
		}
	}
	var wg sync.WaitGroup
	wg.Add(2)
	pprof.Do(context.Background(), pprof.Labels(labelComponent, labelCoalmine), func(context.Context) {
		go func() { defer wg.Done(); spin(300 * time.Millisecond) }()
	})
	go func() { defer wg.Done(); spin(300 * time.Millisecond) }()
	wg.Wait()
	labelled, total, ok := p.finish()
	if !ok {
		t.Fatal("profile could not be read")
	}
	if labelled <= 0 || labelled >= total {
		t.Errorf("labelled CPU %s of %s, want a part of it", labelled, total)
	}
	t.Logf("labelled %s of %s", labelled, total)
}
