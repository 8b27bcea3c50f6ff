package alerts

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// DefaultTimeout bounds one post, connection included (Flagger: 5 s).
const DefaultTimeout = 5 * time.Second

// Notifier sends alerts. The zero value with a Client works; Global and ClusterName come
// from the command line.
type Notifier struct {
	// Client reads AlertProviders (the manager's cache) and their Secrets (uncached).
	Client client.Reader
	// Global receives the alerts of Canaries without spec.analysis.alerts, every severity
	// (Flagger's --slack-url / --msteams-url); nil sends none.
	Global *Provider
	// ClusterName, when set, is the first field of every alert ("Cluster").
	ClusterName string
	// EventWebhook receives every Event of Canaries without an event-type webhook
	// (Flagger's --event-webhook); the loop posts them.
	EventWebhook string
	// Timeout of one post; 0 is DefaultTimeout.
	Timeout time.Duration

	wg sync.WaitGroup
}

// Admits says whether an alert entry of severity entry receives an alert of severity sev,
// as Flagger filters: info (or unset) gets everything, warn gets warn and error, error
// only error.
func Admits(entry, sev v1beta1.AlertSeverity) bool {
	switch entry {
	case "", v1beta1.SeverityInfo:
		return true
	case v1beta1.SeverityWarn:
		return sev == v1beta1.SeverityWarn || sev == v1beta1.SeverityError
	default:
		return entry == sev
	}
}

// Send posts a to every entry of list that admits its severity, or to Global when list is
// empty, in the background: it returns at once. ns is the Canary's namespace, the default
// of each providerRef.
func (n *Notifier) Send(ctx context.Context, ns string, list []v1beta1.CanaryAlert, a Alert) {
	if n.ClusterName != "" {
		a.Fields = append([]Field{{Name: "Cluster", Value: n.ClusterName}}, a.Fields...)
	}
	ctx = context.WithoutCancel(ctx)
	logger := log.FromContext(ctx).WithValues("alertMessage", a.Message, "severity", a.Severity)
	if len(list) == 0 {
		if n.Global == nil || n.Global.Address == "" {
			return
		}
		p := *n.Global
		n.background(func() {
			if err := n.Post(ctx, p, a); err != nil {
				logger.Info("alert not sent", "provider", "global "+p.Type, "error", err.Error())
			}
		})
		return
	}
	for _, entry := range list {
		if !Admits(entry.Severity, a.Severity) {
			continue
		}
		n.background(func() {
			pns := entry.ProviderRef.Namespace
			if pns == "" {
				pns = ns
			}
			where := fmt.Sprintf("AlertProvider %s/%s (alert %s)", pns, entry.ProviderRef.Name, entry.Name)
			p, err := n.Resolve(ctx, pns, entry.ProviderRef.Name)
			if err == nil {
				err = n.Post(ctx, p, a)
			}
			if err != nil {
				logger.Info("alert not sent", "provider", where, "error", err.Error())
			}
		})
	}
}

func (n *Notifier) background(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// Wait returns once every alert sent so far is posted or has failed (tests, shutdown).
func (n *Notifier) Wait() { n.wg.Wait() }

func (n *Notifier) timeout() time.Duration {
	if n.Timeout > 0 {
		return n.Timeout
	}
	return DefaultTimeout
}

// Resolve reads AlertProvider ns/name and, when it names a Secret, that Secret's address
// (which wins over spec.address) and token.
func (n *Notifier) Resolve(ctx context.Context, ns, name string) (Provider, error) {
	if n.Client == nil {
		return Provider{}, fmt.Errorf("no client to read AlertProvider %s/%s", ns, name)
	}
	ctx, cancel := context.WithTimeout(ctx, n.timeout())
	defer cancel()
	ap := &v1beta1.AlertProvider{}
	if err := n.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, ap); err != nil {
		return Provider{}, fmt.Errorf("get AlertProvider: %w", err)
	}
	p := Provider{
		Type: ap.Spec.Type, Address: ap.Spec.Address, Proxy: ap.Spec.Proxy,
		Username: ap.Spec.Username, Channel: ap.Spec.Channel,
	}
	if ref := ap.Spec.SecretRef; ref != nil && ref.Name != "" {
		s := &corev1.Secret{}
		if err := n.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: ref.Name}, s); err != nil {
			return Provider{}, fmt.Errorf("get Secret %s of spec.secretRef: %w", ref.Name, err)
		}
		addr, ok := s.Data[v1beta1.AlertSecretAddressKey]
		if !ok || len(bytes.TrimSpace(addr)) == 0 {
			return Provider{}, fmt.Errorf("Secret %s of spec.secretRef has no key %q", ref.Name, v1beta1.AlertSecretAddressKey)
		}
		p.Address = strings.TrimSpace(string(addr))
		p.Token = strings.TrimSpace(string(s.Data[v1beta1.AlertSecretTokenKey]))
	}
	return p, nil
}

// Post sends a to p now, bounded by the timeout; a 2xx answer is success. The error never
// contains the address, which may carry a secret (Slack's and Teams' URLs do).
func (n *Notifier) Post(ctx context.Context, p Provider, a Alert) error {
	req, err := p.build(a)
	if err != nil {
		return fmt.Errorf("%s provider: %w", p.Type, err)
	}
	body, err := json.Marshal(req.body)
	if err != nil {
		return fmt.Errorf("encode %s payload: %w", p.Type, err)
	}
	ctx, cancel := context.WithTimeout(ctx, n.timeout())
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, req.address, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s provider: build request: %w", p.Type, err)
	}
	hr.Header.Set("Content-Type", "application/json")
	if req.token != "" {
		hr.Header.Set("Authorization", "Bearer "+req.token)
	}
	resp, err := httpClient(p.Proxy).Do(hr)
	if err != nil {
		return fmt.Errorf("post to %s provider at %s: %w", p.Type, redact(req.address), unwrapURLError(err))
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s provider at %s answered %s: %s", p.Type, redact(req.address), resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

var (
	directOnce   sync.Once
	directClient *http.Client
	proxiedMu    sync.Mutex
	proxied      = map[string]*http.Client{}
)

// httpClient is a shared client without a proxy (the environment's HTTPS_PROXY applies),
// or one per proxy address.
func httpClient(proxy string) *http.Client {
	if proxy == "" {
		directOnce.Do(func() { directClient = &http.Client{Transport: transport(http.ProxyFromEnvironment)} })
		return directClient
	}
	proxiedMu.Lock()
	defer proxiedMu.Unlock()
	if c, ok := proxied[proxy]; ok {
		return c
	}
	u, _ := url.Parse(proxy) // checked by build
	c := &http.Client{Transport: transport(http.ProxyURL(u))}
	proxied[proxy] = c
	return c
}

func transport(proxy func(*http.Request) (*url.URL, error)) *http.Transport {
	return &http.Transport{
		Proxy:                 proxy,
		DialContext:           (&net.Dialer{Timeout: DefaultTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   DefaultTimeout,
		ResponseHeaderTimeout: DefaultTimeout,
		MaxIdleConns:          16,
		IdleConnTimeout:       90 * time.Second,
	}
}

// redact keeps scheme and host of an address: webhook paths are credentials.
func redact(address string) string {
	u, err := url.Parse(address)
	if err != nil {
		return "(address)"
	}
	return u.Scheme + "://" + u.Host
}

// unwrapURLError drops the *url.Error wrapper, which repeats the full address.
func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}
