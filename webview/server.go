// Package webview is coalmine's read-only web view: the list of Canaries and, for one,
// a live timeline (weight, each metric against its thresholds, phase changes). It is off
// by default (--web-address) and meant for `kubectl port-forward`: it reads the manager's
// cache and the canarywatch history, never writes, and answers GET and HEAD only.
package webview

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/canarywatch"
)

//go:embed assets
var assets embed.FS

// Histories is where the timelines come from (a *canarywatch.Watcher).
type Histories interface {
	History(namespace, name string) (canarywatch.History, bool)
}

// Server serves the web view. Add it to the manager (mgr.Add); it runs on every replica.
type Server struct {
	addr      string
	reader    client.Reader
	histories Histories
	now       func() time.Time
}

// New returns the web view on addr (host:port), reading Canaries from reader (the
// manager's cache) and timelines from histories.
func New(addr string, reader client.Reader, histories Histories) *Server {
	return &Server{addr: addr, reader: reader, histories: histories, now: time.Now}
}

// NeedLeaderElection is false: every replica serves its own view.
func (s *Server) NeedLeaderElection() bool { return false }

// Start serves until ctx is done.
func (s *Server) Start(ctx context.Context) error {
	l, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("web view: listen on %s: %w", s.addr, err)
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	log.FromContext(ctx).Info("serving the read-only web view", "address", l.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("web view: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("web view: %w", err)
	}
	return nil
}

// Handler is the web view's HTTP handler.
func (s *Server) Handler() http.Handler {
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	page := func(w http.ResponseWriter, r *http.Request) {
		serveAsset(w, r, static, "index.html")
	}
	mux.HandleFunc("GET /{$}", page)
	mux.HandleFunc("GET /canaries/{namespace}/{name}", page)
	for _, name := range []string{"app.js", "style.css", "favicon.svg"} {
		mux.HandleFunc("GET /"+name, func(w http.ResponseWriter, r *http.Request) { serveAsset(w, r, static, name) })
	}
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) { serveAsset(w, r, static, "favicon.svg") })
	mux.HandleFunc("GET /api/canaries", s.list)
	mux.HandleFunc("GET /api/canaries/{namespace}/{name}", s.detail)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	return guard(mux)
}

// guard makes the view read-only and keeps other sites out: GET and HEAD only, a Host
// that is localhost or an IP address (what port-forward and a Service address give;
// a DNS name pointing a browser here from another site is refused), and headers that
// forbid framing and anything not served from here.
func guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "the web view is read-only", http.StatusMethodNotAllowed)
			return
		}
		if !allowedHost(r.Host) {
			http.Error(w, "the web view answers on localhost or an IP address only (kubectl port-forward)", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func allowedHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	return strings.EqualFold(host, "localhost") || net.ParseIP(host) != nil
}

func serveAsset(w http.ResponseWriter, r *http.Request, static fs.FS, name string) {
	data, err := fs.ReadFile(static, name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	types := map[string]string{
		".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
		".css": "text/css; charset=utf-8", ".svg": "image/svg+xml",
	}
	w.Header().Set("Content-Type", types[name[strings.LastIndex(name, "."):]])
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(data)
}

// Summary is one Canary in the list.
type Summary struct {
	Namespace          string          `json:"namespace"`
	Name               string          `json:"name"`
	Target             string          `json:"target"`
	Phase              string          `json:"phase"`
	Weight             int             `json:"weight"`
	MaxWeight          int             `json:"maxWeight"`
	FailedChecks       int             `json:"failedChecks"`
	Threshold          int             `json:"failedChecksThreshold"`
	Revision           string          `json:"revision,omitempty"`
	StableRevision     string          `json:"stableRevision,omitempty"`
	Message            string          `json:"message,omitempty"`
	Metrics            []MetricSummary `json:"metrics"`
	LastTransitionTime *time.Time      `json:"lastTransitionTime,omitempty"`
	Created            time.Time       `json:"created"`
}

// MetricSummary is a metric's last value against its accepted range.
type MetricSummary struct {
	canarywatch.MetricValue
	Min *float64 `json:"min,omitempty"`
	Max *float64 `json:"max,omitempty"`
}

// Detail is one Canary with its timeline.
type Detail struct {
	Summary
	History canarywatch.History `json:"history"`
	Now     time.Time           `json:"now"`
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	var list v1beta1.CanaryList
	if err := s.reader.List(r.Context(), &list); err != nil {
		jsonError(w, http.StatusServiceUnavailable, "list Canaries: "+err.Error())
		return
	}
	out := make([]Summary, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, summarize(&list.Items[i]))
	}
	slices.SortFunc(out, func(a, b Summary) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	writeJSON(w, struct {
		Canaries []Summary `json:"canaries"`
		Now      time.Time `json:"now"`
	}{out, s.now()})
}

func (s *Server) detail(w http.ResponseWriter, r *http.Request) {
	key := client.ObjectKey{Namespace: r.PathValue("namespace"), Name: r.PathValue("name")}
	var c v1beta1.Canary
	if err := s.reader.Get(r.Context(), key, &c); err != nil {
		if client.IgnoreNotFound(err) == nil {
			jsonError(w, http.StatusNotFound, fmt.Sprintf("Canary %s not found", key))
			return
		}
		jsonError(w, http.StatusServiceUnavailable, "get Canary: "+err.Error())
		return
	}
	h, ok := s.histories.History(key.Namespace, key.Name)
	if !ok {
		h = canarywatch.History{Namespace: key.Namespace, Name: key.Name, Threshold: c.Threshold(),
			Thresholds: canarywatch.Thresholds(&c), Since: s.now()}
	}
	if h.Samples == nil {
		h.Samples = []canarywatch.Sample{}
	}
	writeJSON(w, Detail{Summary: summarize(&c), History: h, Now: s.now()})
}

func summarize(c *v1beta1.Canary) Summary {
	st := c.Status
	out := Summary{
		Namespace: c.Namespace, Name: c.Name, Target: c.Spec.TargetRef.Name,
		Phase: string(st.Phase), Weight: st.CanaryWeight, MaxWeight: c.MaxWeight(),
		FailedChecks: st.FailedChecks, Threshold: c.Threshold(),
		Revision: st.CanaryRevision, StableRevision: st.StableRevision, Message: st.Message,
		Metrics: []MetricSummary{}, Created: c.CreationTimestamp.Time,
	}
	if st.LastTransitionTime != nil {
		t := st.LastTransitionTime.Time
		out.LastTransitionTime = &t
	}
	values := map[string]v1beta1.MetricStatus{}
	for _, m := range st.Metrics {
		values[m.Name] = m
	}
	for _, t := range canarywatch.Thresholds(c) {
		ms := MetricSummary{MetricValue: canarywatch.MetricValue{Name: t.Metric}, Min: t.Min, Max: t.Max}
		if m, ok := values[t.Metric]; ok {
			ms.Outcome, ms.Message = string(m.Outcome), m.Message
			if v, err := strconv.ParseFloat(m.Value, 64); err == nil {
				ms.Value = &v
			}
			if m.LastCheckTime != nil {
				ct := m.LastCheckTime.Time
				ms.CheckTime = &ct
			}
		}
		out.Metrics = append(out.Metrics, ms)
	}
	return out
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

func jsonError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
