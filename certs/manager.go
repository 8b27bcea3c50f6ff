// Package certs keeps coalmine's webhook serving certificate: a self-managed CA and a
// serving certificate stored in a Secret, written into the webhook server's cert dir, and
// trusted by coalmine's own webhook configurations through their caBundle.
//
// Every replica runs a Manager (it needs no leader election): replicas race to create or
// renew the Secret with the API's optimistic concurrency, and the loser adopts the
// winner's certificate. The cert-manager install mode does not use this package; there
// the webhook server only watches the files cert-manager's Secret provides.
package certs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// Names the manifests ship (manifests/kustomize, manifests/helm).
const (
	DefaultSecretName           = "coalmine-webhook-tls"
	DefaultServiceName          = "coalmine-webhook"
	DefaultWebhookConfiguration = "coalmine"
)

// Defaults of Options.
const (
	DefaultCAValidity     = 10 * 365 * 24 * time.Hour
	DefaultCertValidity   = 365 * 24 * time.Hour
	DefaultResyncInterval = 30 * time.Second
	DefaultRetryInterval  = 5 * time.Second
	maxConflictAttempts   = 5
)

// ErrNotInjected wraps the error of a pass that wrote the serving certificate but could
// not put the CA into every webhook configuration. At start-up the webhook server can
// start anyway (the files exist); Start keeps retrying, and ReadyCheck stays false
// meanwhile.
var ErrNotInjected = errors.New("webhook CA bundle not injected")

// Options configure a Manager. Namespace and CertDir are required.
type Options struct {
	// Namespace holds the Secret and the webhook Service.
	Namespace string
	// SecretName is the Secret holding the CA and serving pair; default coalmine-webhook-tls.
	SecretName string
	// ServiceName is the webhook Service; the certificate is valid for
	// <ServiceName>.<Namespace>.svc and <ServiceName>.<Namespace>.svc.cluster.local.
	// Default coalmine-webhook.
	ServiceName string
	// CertDir receives tls.crt and tls.key for the webhook server.
	CertDir string
	// DNSNames and IPAddresses are extra subject alternative names, e.g. 127.0.0.1 when
	// the apiserver calls the webhook through a loopback URL (sandbox).
	DNSNames    []string
	IPAddresses []net.IP
	// WebhookConfigurations names the MutatingWebhookConfiguration and the
	// ValidatingWebhookConfiguration (the same name for both kinds) whose caBundle this
	// Manager keeps. Nil means [coalmine]. Both kinds must exist; they are never created.
	WebhookConfigurations []string
	// CAValidity and CertValidity are the lifetimes of new certificates; a certificate
	// is replaced when less than a third of its lifetime is left. Defaults 10 years and
	// 1 year.
	CAValidity   time.Duration
	CertValidity time.Duration
	// ResyncInterval is how often Start re-checks expiry and caBundles (a re-applied
	// manifest may have blanked them); RetryInterval is the pause after a failed pass.
	ResyncInterval time.Duration
	RetryInterval  time.Duration
	// Clock is the time source; default the real clock.
	Clock clock.Clock
}

func (o Options) withDefaults() Options {
	if o.SecretName == "" {
		o.SecretName = DefaultSecretName
	}
	if o.ServiceName == "" {
		o.ServiceName = DefaultServiceName
	}
	if o.WebhookConfigurations == nil {
		o.WebhookConfigurations = []string{DefaultWebhookConfiguration}
	}
	if o.CAValidity <= 0 {
		o.CAValidity = DefaultCAValidity
	}
	if o.CertValidity <= 0 {
		o.CertValidity = DefaultCertValidity
	}
	if o.ResyncInterval <= 0 {
		o.ResyncInterval = DefaultResyncInterval
	}
	if o.RetryInterval <= 0 {
		o.RetryInterval = DefaultRetryInterval
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	return o
}

// ServiceDNSNames are the names the apiserver uses to call a webhook Service.
func ServiceDNSNames(service, namespace string) []string {
	return []string{
		fmt.Sprintf("%s.%s.svc", service, namespace),
		fmt.Sprintf("%s.%s.svc.cluster.local", service, namespace),
	}
}

// Manager ensures the serving certificate, its files and the caBundles. It is a
// controller-runtime Runnable that runs on every replica.
type Manager struct {
	c    client.Client
	opts Options

	// pass serialises Ensure; state guards what ReadyCheck reads, so a probe never
	// waits for a pass's API calls.
	pass     sync.Mutex
	state    sync.RWMutex
	served   []byte // CA bundle that signs the certificate on disk; nil before the first write
	injected []byte // CA bundle last confirmed in every webhook configuration
}

// New returns a Manager. c must be a client that reads from the API server, not from a
// cache (client.New, or a manager's APIReader for reads): RBAC grants get/update/patch on
// the named Secret and webhook configurations only, which an informer cannot list.
func New(c client.Client, opts Options) *Manager {
	return &Manager{c: c, opts: opts.withDefaults()}
}

// NeedLeaderElection is false: every replica serves webhooks, so every replica needs the
// certificate.
func (m *Manager) NeedLeaderElection() bool { return false }

// Start runs Ensure now and then every ResyncInterval (RetryInterval after a failure)
// until ctx ends. Failures are logged, not returned, so one unreachable apiserver moment
// does not stop the manager.
func (m *Manager) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("certs")
	ctx = log.IntoContext(ctx, logger)
	for {
		wait := m.opts.ResyncInterval
		if err := m.Ensure(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			logger.Error(err, "Ensure webhook certificate failed", "retryIn", m.opts.RetryInterval)
			wait = m.opts.RetryInterval
		}
		select {
		case <-ctx.Done():
			return nil
		case <-m.opts.Clock.After(wait):
		}
	}
}

// Ensure makes one pass: create or renew the Secret if needed, write the serving pair
// into CertDir, and inject the CA bundle into the webhook configurations. Call it once
// before the webhook server starts, so the files exist when it loads them.
func (m *Manager) Ensure(ctx context.Context) error {
	if m.opts.Namespace == "" {
		return errors.New("ensure webhook certificate: namespace is required")
	}
	if m.opts.CertDir == "" {
		return errors.New("ensure webhook certificate: cert dir is required")
	}
	m.pass.Lock()
	defer m.pass.Unlock()
	logger := log.FromContext(ctx)

	data, err := m.ensureSecret(ctx)
	if err != nil {
		return err
	}
	bundle := caBundle(data, m.opts.Clock.Now())
	// Inject first: the bundle still holds the previous CA, so the certificate being
	// served stays trusted, and a rotated one is only served once the apiserver trusts
	// its CA. On first start there is nothing served yet, so the files go out regardless.
	injectErr := m.inject(ctx, bundle)
	if injectErr == nil {
		m.state.Lock()
		m.injected = bundle
		m.state.Unlock()
	}
	if _, statErr := os.Stat(filepath.Join(m.opts.CertDir, FileCert)); injectErr == nil || statErr != nil {
		changed, err := writeFiles(m.opts.CertDir, data[KeyCert], data[KeyKey])
		if err != nil {
			return fmt.Errorf("write serving certificate: %w", err)
		}
		if changed {
			logger.Info("Wrote serving certificate", "dir", m.opts.CertDir, "notAfter", notAfter(data[KeyCert]))
		}
		m.state.Lock()
		m.served = bundle
		m.state.Unlock()
	}
	if injectErr != nil {
		return fmt.Errorf("%w: %w", ErrNotInjected, injectErr)
	}
	return nil
}

// ReadyCheck is a healthz.Checker: ready once the current certificate is on disk and
// the CA that signed it has been injected. It does not turn false when a later pass
// fails with the same CA (the apiserver still trusts it, and an unready fleet would
// empty the webhook Service); it does while a rotated CA waits to be injected.
func (m *Manager) ReadyCheck(_ *http.Request) error {
	m.state.RLock()
	defer m.state.RUnlock()
	switch {
	case m.served == nil:
		return errors.New("webhook serving certificate not written yet")
	case !bytes.Equal(m.served, m.injected):
		return errors.New("webhook CA bundle not injected into the webhook configurations yet")
	}
	return nil
}

func (m *Manager) wantNames() names {
	dns := ServiceDNSNames(m.opts.ServiceName, m.opts.Namespace)
	for _, d := range m.opts.DNSNames {
		if !slices.Contains(dns, d) {
			dns = append(dns, d)
		}
	}
	return names{DNS: dns, IPs: slices.Clone(m.opts.IPAddresses)}
}

// ensureSecret returns the Secret data to serve, creating or renewing it when needed.
// Two replicas may race: a create that finds the Secret already there, or an update
// whose resourceVersion is stale, re-reads and judges what the other replica wrote.
func (m *Manager) ensureSecret(ctx context.Context) (map[string][]byte, error) {
	logger := log.FromContext(ctx)
	key := types.NamespacedName{Namespace: m.opts.Namespace, Name: m.opts.SecretName}
	want := m.wantNames()
	v := validity{CA: m.opts.CAValidity, Serving: m.opts.CertValidity}

	for range maxConflictAttempts {
		now := m.opts.Clock.Now()
		secret := &corev1.Secret{}
		err := m.c.Get(ctx, key, secret)
		if apierrors.IsNotFound(err) {
			data, err := apply(actionNewCA, bundle{}, now, want, v)
			if err != nil {
				return nil, fmt.Errorf("create webhook certificate: %w", err)
			}
			secret = m.newSecret(data)
			err = m.c.Create(ctx, secret)
			if apierrors.IsAlreadyExists(err) {
				logger.V(1).Info("Another replica created the webhook certificate Secret first; using it", "secret", key)
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("create secret %s: %w", key, err)
			}
			logger.Info("Created webhook CA and serving certificate", "secret", key, "notAfter", notAfter(data[KeyCert]))
			return data, nil
		}
		if err != nil {
			return nil, fmt.Errorf("get secret %s: %w", key, err)
		}

		b := parseBundle(secret.Data)
		act, why := decide(b, now, want)
		if act == actionKeep {
			return secret.Data, nil
		}
		data, err := apply(act, b, now, want, v)
		if err != nil {
			return nil, fmt.Errorf("renew webhook certificate (%s): %w", act, err)
		}
		// Keep keys someone else added; ours are replaced.
		merged := maps.Clone(secret.Data)
		if merged == nil {
			merged = map[string][]byte{}
		}
		maps.Copy(merged, data)
		secret.Data = merged
		err = m.c.Update(ctx, secret) // carries the resourceVersion read above
		if apierrors.IsConflict(err) {
			logger.V(1).Info("Webhook certificate Secret changed while renewing; re-reading", "secret", key)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("update secret %s: %w", key, err)
		}
		logger.Info("Renewed webhook certificate", "secret", key, "action", act.String(), "reason", why, "notAfter", notAfter(data[KeyCert]))
		return merged, nil
	}
	return nil, fmt.Errorf("ensure secret %s: still conflicting after %d attempts", key, maxConflictAttempts)
}

func (m *Manager) newSecret(data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: m.opts.Namespace,
			Name:      m.opts.SecretName,
			Labels: map[string]string{
				"app.kubernetes.io/name":       "coalmine",
				"app.kubernetes.io/component":  "webhook",
				"app.kubernetes.io/managed-by": "coalmine",
			},
		},
		Type: corev1.SecretTypeTLS,
		Data: data,
	}
}

// inject puts bundle into every webhook of the named configurations. It patches only
// webhooks whose caBundle differs, with a JSON patch that tests each webhook's name at
// its index, so a concurrent reordering makes the patch fail rather than hit the wrong
// webhook.
func (m *Manager) inject(ctx context.Context, bundle []byte) error {
	var errs []error
	for _, name := range m.opts.WebhookConfigurations {
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		errs = append(errs, m.injectOne(ctx, "MutatingWebhookConfiguration", mwc, name, bundle, func() []webhookCA {
			out := make([]webhookCA, 0, len(mwc.Webhooks))
			for _, w := range mwc.Webhooks {
				out = append(out, webhookCA{name: w.Name, caBundle: w.ClientConfig.CABundle})
			}
			return out
		}))
		vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		errs = append(errs, m.injectOne(ctx, "ValidatingWebhookConfiguration", vwc, name, bundle, func() []webhookCA {
			out := make([]webhookCA, 0, len(vwc.Webhooks))
			for _, w := range vwc.Webhooks {
				out = append(out, webhookCA{name: w.Name, caBundle: w.ClientConfig.CABundle})
			}
			return out
		}))
	}
	return errors.Join(errs...)
}

type webhookCA struct {
	name     string
	caBundle []byte
}

// injectOne reads the named configuration into obj, then patches the webhooks (listed by
// webhooks, which reads obj) whose caBundle differs.
func (m *Manager) injectOne(ctx context.Context, kind string, obj client.Object, name string, bundle []byte, webhooks func() []webhookCA) error {
	if err := m.c.Get(ctx, types.NamespacedName{Name: name}, obj); err != nil {
		return fmt.Errorf("get %s %s: %w", kind, name, err)
	}
	patch, n, err := caBundlePatch(webhooks(), bundle)
	if err != nil || n == 0 {
		return err
	}
	if err := m.c.Patch(ctx, obj, client.RawPatch(types.JSONPatchType, patch)); err != nil {
		return fmt.Errorf("inject CA bundle into %s %s: %w", kind, name, err)
	}
	log.FromContext(ctx).Info("Injected CA bundle", "kind", kind, "name", name, "webhooks", n)
	return nil
}

type jsonPatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// caBundlePatch returns a JSON patch setting bundle on every webhook that lacks it, and
// how many webhooks it changes.
func caBundlePatch(webhooks []webhookCA, bundle []byte) ([]byte, int, error) {
	var ops []jsonPatchOp
	n := 0
	for i, w := range webhooks {
		if bytes.Equal(w.caBundle, bundle) {
			continue
		}
		n++
		ops = append(ops,
			jsonPatchOp{Op: "test", Path: fmt.Sprintf("/webhooks/%d/name", i), Value: w.name},
			// add replaces an existing member too, and works when caBundle is absent.
			jsonPatchOp{Op: "add", Path: fmt.Sprintf("/webhooks/%d/clientConfig/caBundle", i), Value: bundle},
		)
	}
	if n == 0 {
		return nil, 0, nil
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return nil, 0, fmt.Errorf("encode caBundle patch: %w", err)
	}
	return patch, n, nil
}

func notAfter(certPEM []byte) string {
	certs, err := parseCerts(certPEM)
	if err != nil {
		return "unknown"
	}
	return certs[0].NotAfter.UTC().Format(time.RFC3339)
}
