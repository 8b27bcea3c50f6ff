// Package meshsim plays Kuma's data plane for the sandbox, whose kwok pods run no process.
//
// For every apex Service of the mesh namespaces, a simulated caller sends a steady request
// rate to the apex's kuma.io/service tag (<svc>_<ns>_svc_<port>). A TrafficRoute or
// MeshHTTPRoute naming that tag splits the requests by weight, as the caller's Envoy would;
// each request is counted on the outbound cluster of the split entry it went to, with a
// response code and a latency taken from the env vars of the Ready pods behind it:
//
//	SIM_ERROR_RATE  fraction (0..1, or "10%") of requests answered 500/503; default 0
//	SIM_LATENCY_MS  latency in milliseconds (or a duration such as "300ms"); default 20
//
// Besides the users' plain GET /, an apex may declare callers that send headers (A/B
// testing matches them; AnnotationCallers), and any Service may be load-tested, called
// directly whatever the routes say, as Flagger's load tester calls <app>-canary during a
// blue/green analysis (AnnotationLoadTest). Each caller's counts are kept apart
// (CallerSnapshot, UserSnapshot).
//
// Counting is deterministic: fractions of requests and errors carry over from tick to tick,
// so a pod with SIM_ERROR_RATE=0.1 fails exactly one request in ten. The callers' Envoy
// stats are served on /metrics in Prometheus text format, named and labelled as Kuma's
// Envoy exposes them, so the seed's PromQL works unchanged:
//
//	envoy_cluster_upstream_rq{envoy_cluster_name, envoy_response_code, kuma_io_mesh, namespace}
//	envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name, le, kuma_io_mesh, namespace}
package meshsim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// Defaults of Options.
const (
	DefaultRPS      = 50
	DefaultListen   = "127.0.0.1:0"
	DefaultInterval = 200 * time.Millisecond
)

// maxStep bounds the time one tick accounts for, so a stalled process (a suspended laptop,
// a debugger) does not fire minutes of requests in one burst.
const maxStep = 5 * time.Second

// Options configure a Simulator. Either Client or Config is required.
type Options struct {
	// Client reads Namespaces, Services and Pods. Pass a cached reader (a manager's
	// client, or a cache): the simulator lists every tick.
	Client client.Reader
	// RouteClient reads TrafficRoutes, and MeshHTTPRoutes besides Client: in multi-zone the
	// routes live on the Global control plane's cluster. Nil means Client.
	RouteClient client.Reader
	// LiveClient, when set, reads a Service's Pods past any cache when its cluster has
	// weight but no Ready pod in Client's view (confirmEmpty). Start sets it from Config
	// when it builds Client's cache.
	LiveClient client.Reader
	// LiveRouteClient, when set, reads the routes of a separate route cluster (RouteClient
	// or RouteConfig) past any cache when a weighted cluster is empty in LiveClient's read
	// too: the cached route may predate that read. Start sets it from RouteConfig. Routes
	// read from Client's cluster are read live by LiveClient.
	LiveRouteClient client.Reader

	// Config, when Client is nil, builds an informer cache for Namespaces, Services and
	// Pods (restricted to Namespaces when set). RouteConfig, when RouteClient is nil, does
	// the same for routes; a nil RouteConfig means the Client's cluster.
	Config      *rest.Config
	RouteConfig *rest.Config

	// Namespaces whose Services are called. Nil means every namespace labelled
	// kuma.io/sidecar-injection=enabled.
	Namespaces []string
	// RPS is each caller's request rate (per apex Service port). Default 50.
	RPS float64
	// Listen is the address of the /metrics listener. Default 127.0.0.1:0.
	Listen string
	// Interval between ticks. Default 200ms.
	Interval time.Duration
	// Clock drives the ticks. Default the real clock.
	Clock clock.WithTicker
}

// Counts are the requests an Envoy cluster received since the simulator started.
type Counts struct {
	Requests uint64
	// Errors are the 5xx responses among Requests.
	Errors uint64
}

// Simulator is a running mesh traffic simulator.
type Simulator struct {
	opts     Options
	clock    clock.WithTicker
	listener net.Listener
	metrics  *metrics
	done     chan struct{}

	// routeSources are the readers of each route kind, in order of precedence.
	// They and knownMeshes belong to the stepping goroutine.
	trafficRouteSources  []*routeSource
	meshHTTPRouteSources []*routeSource
	knownMeshes          map[string]string

	// mu guards the traffic state below; ticks write it, Snapshot reads it.
	mu      sync.Mutex
	last    time.Time
	rpsAcc  map[string]int64 // per call key: remainder of requests, in milli-requests x nanoseconds
	callers map[string]*callerState
	series  map[seriesKey]*seriesState
}

// Start serves /metrics and starts ticking; both stop when ctx is done. It returns once the
// listener is bound (and the caches it built, if any, are synced).
func Start(ctx context.Context, opts Options) (*Simulator, error) {
	logger := log.FromContext(ctx).WithName("meshsim")
	ctx = log.IntoContext(ctx, logger)

	if opts.RPS <= 0 {
		opts.RPS = DefaultRPS
	}
	if opts.Listen == "" {
		opts.Listen = DefaultListen
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Client == nil {
		if opts.Config == nil {
			return nil, errors.New("start mesh simulator: neither Client nor Config is set")
		}
		c, err := startCache(ctx, opts.Config, opts.Namespaces)
		if err != nil {
			return nil, fmt.Errorf("start mesh simulator: %w", err)
		}
		opts.Client = c
		if opts.LiveClient == nil {
			live, err := client.New(opts.Config, client.Options{Scheme: scheme})
			if err != nil {
				return nil, fmt.Errorf("start mesh simulator: live client: %w", err)
			}
			opts.LiveClient = live
		}
	}
	separateRoutes := opts.RouteClient != nil || opts.RouteConfig != nil
	if opts.RouteClient == nil {
		if opts.RouteConfig != nil {
			c, err := startCache(ctx, opts.RouteConfig, nil)
			if err != nil {
				return nil, fmt.Errorf("start mesh simulator: route cluster: %w", err)
			}
			opts.RouteClient = c
			if opts.LiveRouteClient == nil {
				live, err := client.New(opts.RouteConfig, client.Options{Scheme: scheme})
				if err != nil {
					return nil, fmt.Errorf("start mesh simulator: route cluster: live client: %w", err)
				}
				opts.LiveRouteClient = live
			}
		} else {
			opts.RouteClient = opts.Client
		}
	}

	s := newSimulator(opts, separateRoutes)

	l, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("start mesh simulator: listen on %s: %w", opts.Listen, err)
	}
	s.listener = l
	mux := http.NewServeMux()
	mux.Handle("/metrics", s.metrics)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error(err, "Serve metrics", "address", l.Addr().String())
		}
	}()
	go func() {
		defer close(s.done)
		s.run(ctx)
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	logger.Info("Mesh simulator started", "metrics", "http://"+s.Addr()+"/metrics", "rps", opts.RPS)
	return s, nil
}

func newSimulator(opts Options, separateRoutes bool) *Simulator {
	s := &Simulator{
		opts:    opts,
		clock:   opts.Clock,
		metrics: newMetrics(),
		done:    make(chan struct{}),
		last:    opts.Clock.Now(),
		callers: map[string]*callerState{},
		rpsAcc:  map[string]int64{},
		series:  map[seriesKey]*seriesState{},
	}
	// TrafficRoutes live where the mesh control plane is (the Global CP in multi-zone);
	// MeshHTTPRoutes may be owned by the zone, so both clusters are read for them.
	s.trafficRouteSources = []*routeSource{{reader: opts.RouteClient, gvk: trafficRouteGVK, routeCluster: separateRoutes}}
	s.meshHTTPRouteSources = []*routeSource{{reader: opts.Client, gvk: meshHTTPRouteGVK}}
	if separateRoutes {
		s.meshHTTPRouteSources = append(s.meshHTTPRouteSources, &routeSource{reader: opts.RouteClient, gvk: meshHTTPRouteGVK, routeCluster: true})
	}
	return s
}

// Addr is the host:port of the /metrics listener.
func (s *Simulator) Addr() string { return s.listener.Addr().String() }

// Done is closed when the simulator has stopped after its context ended.
func (s *Simulator) Done() <-chan struct{} { return s.done }

// Snapshot returns the requests counted so far per Envoy cluster name
// (<svc>_<ns>_svc_<port>), summed over callers.
func (s *Simulator) Snapshot() map[string]Counts {
	return s.snapshot(func(string) bool { return true })
}

// CallerSnapshot is Snapshot for one caller: CallerUsers, CallerLoadTester or a name of
// AnnotationCallers.
func (s *Simulator) CallerSnapshot(caller string) map[string]Counts {
	return s.snapshot(func(c string) bool { return c == caller })
}

// UserSnapshot is Snapshot without the load tester: what the users and the extra callers
// of the apexes sent, the requests a route decides.
func (s *Simulator) UserSnapshot() map[string]Counts {
	return s.snapshot(func(c string) bool { return c != CallerLoadTester })
}

func (s *Simulator) snapshot(keep func(caller string) bool) map[string]Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]Counts{}
	for k, st := range s.series {
		if !keep(k.caller) {
			continue
		}
		c := out[k.cluster]
		c.Requests += st.counts.Requests
		c.Errors += st.counts.Errors
		out[k.cluster] = c
	}
	return out
}

func (s *Simulator) run(ctx context.Context) {
	logger := log.FromContext(ctx)
	ticker := s.clock.NewTicker(s.opts.Interval)
	defer ticker.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C():
		}
		err := s.step(ctx)
		// A broken read repeats every tick; say it once, and say when it heals.
		switch {
		case err != nil && err.Error() != lastErr:
			logger.Error(err, "Simulate mesh traffic")
			lastErr = err.Error()
		case err == nil && lastErr != "":
			logger.Info("Simulating mesh traffic again")
			lastErr = ""
		}
	}
}

// step reads the mesh and sends the requests due since the previous step. If the mesh cannot
// be read, nothing is sent and the next step catches up.
func (s *Simulator) step(ctx context.Context) error {
	readCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	m, err := s.readMesh(readCtx)
	if err != nil {
		return err
	}
	calls := m.plan()
	if s.confirmEmpty(readCtx, m, calls) && s.rereadRoutesLive(readCtx, m) {
		calls = m.plan()
	}
	now := s.clock.Now()

	s.mu.Lock()
	defer s.mu.Unlock()
	dt := s.elapsed(now)
	for _, c := range calls {
		s.send(logr.FromContextOrDiscard(ctx), now, m, c, s.dueRequests(c, dt))
	}
	return nil
}

// elapsed is the time the step accounts for since the last one, at most maxStep.
func (s *Simulator) elapsed(now time.Time) time.Duration {
	dt := now.Sub(s.last)
	s.last = now
	return min(max(dt, 0), maxStep)
}

// dueRequests is how many requests caller c sends for dt, at its rate (the simulator's
// RPS unless the caller has its own); the fraction left carries over to the next step.
func (s *Simulator) dueRequests(c call, dt time.Duration) int64 {
	if dt <= 0 {
		return 0
	}
	rps := s.opts.RPS
	if c.caller.rps > 0 {
		rps = c.caller.rps
	}
	const unit = int64(time.Second/time.Nanosecond) * 1000 // milli-requests x ns per request
	acc := s.rpsAcc[c.key()] + int64(rps*1000+0.5)*dt.Nanoseconds()
	n := acc / unit
	s.rpsAcc[c.key()] = acc - n*unit
	return n
}

var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}()

// startCache starts an informer cache for the simulator's reads and waits for it; informers
// for each kind start on first use.
func startCache(ctx context.Context, cfg *rest.Config, namespaces []string) (cache.Cache, error) {
	opts := cache.Options{Scheme: scheme, DefaultTransform: cache.TransformStripManagedFields()}
	if len(namespaces) > 0 {
		opts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	c, err := cache.New(cfg, opts)
	if err != nil {
		return nil, fmt.Errorf("create cache: %w", err)
	}
	go func() {
		if err := c.Start(ctx); err != nil {
			log.FromContext(ctx).Error(err, "Run cache")
		}
	}()
	if !c.WaitForCacheSync(ctx) {
		return nil, fmt.Errorf("wait for cache sync: %w", ctx.Err())
	}
	return c, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
