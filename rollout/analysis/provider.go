package analysis

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// ProviderConfig is how to reach a Prometheus server.
type ProviderConfig struct {
	// Address is the base URL, e.g. https://prometheus.monitoring:9090.
	Address string
	// CAFile is a PEM bundle trusted in addition to the system roots (a private CA).
	CAFile string
	// BearerTokenFile is read at every query, so a rotated token is picked up.
	BearerTokenFile string
	// Username and Password are sent as basic auth.
	Username, Password string
	// Headers are added to every request (e.g. X-Scope-OrgID for Mimir or Thanos tenants).
	Headers http.Header
	// InsecureSkipVerify turns off TLS verification.
	InsecureSkipVerify bool
	// Timeout of one query; default 10s.
	Timeout time.Duration
	// Zone is what the builtins' {{ zone }} renders (the default provider only: --zone).
	Zone string
}

// DefaultQueryTimeout bounds a query whose provider sets no timeout.
const DefaultQueryTimeout = 10 * time.Second

// errNoValues is a query that succeeded with an empty vector or NaN.
var errNoValues = errors.New("no values found")

// endpoint is a resolved provider: a ProviderConfig plus credentials and a CA bundle
// taken from a Secret.
type endpoint struct {
	ProviderConfig
	caPEM []byte // from a Secret's ca.crt
	token string // from a Secret's token
}

// clients builds and caches Prometheus API clients. A client, and so its connection pool,
// is kept per address and TLS/auth configuration; the CA and token files are only
// re-read when a stat says they changed.
type clients struct {
	mu    sync.Mutex
	byKey map[string]promv1.API
	files fileCache
}

// maxClients bounds the cache: keys change when a Secret does, and old ones are dead.
const maxClients = 64

func (cs *clients) get(e endpoint) (promv1.API, error) {
	caFromFile, err := cs.files.read(e.CAFile)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	key := e.cacheKey(caFromFile)

	cs.mu.Lock()
	defer cs.mu.Unlock()
	if api, ok := cs.byKey[key]; ok {
		return api, nil
	}
	tlsConfig, err := e.tlsConfig(caFromFile)
	if err != nil {
		return nil, err
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsConfig
	client, err := promapi.NewClient(promapi.Config{
		Address:      e.Address,
		RoundTripper: &authRoundTripper{endpoint: e, files: &cs.files, next: transport},
	})
	if err != nil {
		return nil, fmt.Errorf("create Prometheus client for %s: %w", e.Address, err)
	}
	if cs.byKey == nil || len(cs.byKey) >= maxClients {
		cs.byKey = map[string]promv1.API{}
	}
	api := promv1.NewAPI(client)
	cs.byKey[key] = api
	return api, nil
}

func (e endpoint) cacheKey(caFromFile []byte) string {
	h := sha256.New()
	field := func(s string) { h.Write([]byte(s)); h.Write([]byte{0}) }
	field(e.Address)
	field(string(caFromFile))
	field(string(e.caPEM))
	field(fmt.Sprint(e.InsecureSkipVerify))
	field(e.BearerTokenFile)
	field(e.token)
	field(e.Username)
	field(e.Password)
	keys := make([]string, 0, len(e.Headers))
	for k := range e.Headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		field(k)
		field(strings.Join(e.Headers[k], "\x00"))
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (e endpoint) tlsConfig(caFromFile []byte) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: e.InsecureSkipVerify} //nolint:gosec // the user's explicit choice
	if len(caFromFile) == 0 && len(e.caPEM) == 0 {
		return cfg, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if len(caFromFile) > 0 && !pool.AppendCertsFromPEM(caFromFile) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", e.CAFile)
	}
	if len(e.caPEM) > 0 && !pool.AppendCertsFromPEM(e.caPEM) {
		return nil, errors.New("ca.crt of the provider Secret holds no PEM certificate")
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// authRoundTripper adds credentials and headers to each request.
type authRoundTripper struct {
	endpoint
	files *fileCache
	next  http.RoundTripper
}

func (rt *authRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	for k, vs := range rt.Headers {
		req.Header.Del(k)
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	switch {
	case rt.token != "":
		req.Header.Set("Authorization", "Bearer "+rt.token)
	case rt.BearerTokenFile != "":
		token, err := rt.files.read(rt.BearerTokenFile)
		if err != nil {
			return nil, fmt.Errorf("read bearer token file: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	case rt.Username != "" || rt.Password != "":
		req.SetBasicAuth(rt.Username, rt.Password)
	}
	return rt.next.RoundTrip(req)
}

// fileCache reads small files (CA bundles, tokens) again only when their size or
// modification time changed.
type fileCache struct {
	mu    sync.Mutex
	files map[string]cachedFile
}

type cachedFile struct {
	modTime time.Time
	size    int64
	data    []byte
}

func (fc *fileCache) read(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if f, ok := fc.files[path]; ok && f.modTime.Equal(info.ModTime()) && f.size == info.Size() {
		return f.data, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if fc.files == nil {
		fc.files = map[string]cachedFile{}
	}
	fc.files[path] = cachedFile{modTime: info.ModTime(), size: info.Size(), data: data}
	return data, nil
}

// query runs an instant query and returns its single value. An empty vector or NaN is
// errNoValues. A vector of several series is an error: which one would decide depends on
// the order Prometheus returns them in, so the query must aggregate them itself.
func (cs *clients) query(ctx context.Context, e endpoint, q string) (float64, error) {
	if e.Address == "" {
		return 0, errors.New("no Prometheus address: set --metrics-server, spec.metricsServer or the template's provider.address")
	}
	api, err := cs.get(e)
	if err != nil {
		return 0, err
	}
	timeout := e.Timeout
	if timeout <= 0 {
		timeout = DefaultQueryTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// The zero time lets Prometheus evaluate at its own "now": no clock skew between us.
	result, warnings, _, err := api.Query(ctx, q, time.Time{}, promv1.WithTimeout(timeout))
	if err != nil {
		return 0, err
	}
	if len(warnings) > 0 {
		log.FromContext(ctx).Info("Prometheus query warnings", "address", e.Address, "warnings", warnings)
	}
	value, err := singleValue(result)
	if err != nil {
		return 0, err
	}
	if math.IsNaN(value) {
		return 0, errNoValues
	}
	return value, nil
}

// singleValue is the one value of an instant query's result: a scalar, or a vector of at
// most one sample (none is errNoValues).
func singleValue(result model.Value) (float64, error) {
	switch v := result.(type) {
	case model.Vector:
		switch len(v) {
		case 0:
			return 0, errNoValues
		case 1:
			return float64(v[0].Value), nil
		}
		return 0, fmt.Errorf("query returned %d series; aggregate it (sum/avg/max) to one value", len(v))
	case *model.Scalar:
		return float64(v.Value), nil
	}
	return 0, fmt.Errorf("query returned a %s; want an instant vector or a scalar", result.Type())
}
