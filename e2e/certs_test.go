package e2e

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coalmine-dev/coalmine/certs"
	"github.com/coalmine-dev/coalmine/cmd/coalmine/app"
	"github.com/coalmine-dev/coalmine/cmd/coalmine/demo"
	"github.com/coalmine-dev/coalmine/manifests"
	"github.com/coalmine-dev/coalmine/webhook"
)

// TestCertificateLifecycle runs coalmine's self-managed certificates against the real
// apiserver, which calls the real HTTPS webhook: a fresh start creates the Secret and
// injects the CA; a restart reuses both untouched; a serving certificate and then a CA
// near their end are replaced while coalmine runs, and the apiserver's admission calls
// keep succeeding throughout.
//
// The Secret and the webhook configurations are the ones every other scenario's coalmine
// uses, so the test stops the shared coalmine and runs alone (no t.Parallel: Go runs it
// before any parallel test resumes). At the end the shared coalmine starts again on what
// this test left: a valid Secret whose CA is injected.
func TestCertificateLifecycle(t *testing.T) {
	env := sharedRollout(t)
	env.restartCoalmineAtCleanup(t)
	env.stopCoalmine(t)
	probe := newAdmissionProbe(t, newNamespace(t, nil))

	// Each start is a new pod: an empty cert dir, filled from the Secret.
	certRoot := t.TempDir()
	var (
		running *demo.Instance
		pods    int
	)
	start := func(t *testing.T) {
		t.Helper()
		pods++
		dir := filepath.Join(certRoot, fmt.Sprintf("pod-%d", pods))
		began := time.Now()
		in, err := demo.StartCoalmine(env.ctx, sb, env.port, func(o *app.Options) { o.CertDir = dir })
		if err != nil {
			t.Fatalf("start coalmine: %v", err)
		}
		running = in
		t.Logf("coalmine ready (certificate served and injected) %s after start", time.Since(began).Round(time.Millisecond))
	}
	stop := func(t *testing.T) {
		t.Helper()
		if running == nil {
			return
		}
		in := running
		running = nil
		if err := in.Stop(); err != nil {
			t.Errorf("stop coalmine: %v", err)
		}
	}
	// Runs before restartCoalmineAtCleanup's restart (cleanups run last-in first-out).
	t.Cleanup(func() { stop(t) })

	var first *x509.Certificate // the serving certificate of the fresh start

	if !t.Run("fresh start creates the Secret and injects the CA", func(t *testing.T) {
		ctx := testContext(t, 2*time.Minute)
		secret := &corev1.Secret{}
		secret.Namespace, secret.Name = demo.Namespace, certs.DefaultSecretName
		if err := k8s.Delete(ctx, secret); err != nil && !apierrors.IsNotFound(err) {
			t.Fatalf("delete the serving Secret: %v", err)
		}
		clearCABundles(t, ctx)
		// With no coalmine and no CA the call fails, and the Canary webhook fails open:
		// the malformed Canary passes. So a denial below proves the webhook answered.
		if err := probe.denied(ctx); err == nil || !strings.Contains(err.Error(), "was admitted") {
			t.Fatalf("with coalmine down, the probe = %v, want the malformed Canary admitted (fail open)", err)
		}

		start(t)
		s := getTLSSecret(t, ctx)
		if s.Type != corev1.SecretTypeTLS {
			t.Errorf("Secret type %q, want %q", s.Type, corev1.SecretTypeTLS)
		}
		for _, k := range []string{certs.KeyCert, certs.KeyKey, certs.KeyCA, certs.KeyCAKey} {
			if len(s.Data[k]) == 0 {
				t.Errorf("Secret lacks %s", k)
			}
		}
		cas := mustParseCerts(t, "ca.crt", s.Data[certs.KeyCA])
		if len(cas) != 1 {
			t.Errorf("a new Secret holds %d CAs, want 1", len(cas))
		}
		expectInjected(t, ctx, cas)
		expectReady(t, ctx, running)
		first = expectServing(t, ctx, env.port, s)
		for _, name := range []string{"coalmine-webhook.coalmine-system.svc", "coalmine-webhook.coalmine-system.svc.cluster.local"} {
			if !slices.Contains(first.DNSNames, name) {
				t.Errorf("serving certificate lacks DNS name %s (has %v)", name, first.DNSNames)
			}
		}
		if err := probe.denied(ctx); err != nil {
			t.Fatalf("malformed Canary: %v", err)
		}
		if err := probe.allowed(ctx); err != nil {
			t.Fatalf("seed Canary: %v", err)
		}
	}) {
		return
	}

	if !t.Run("restart keeps the Secret and the CA bundle untouched", func(t *testing.T) {
		ctx := testContext(t, 2*time.Minute)
		before := getTLSSecret(t, ctx)
		mwc, vwc := getWebhookConfigurations(t, ctx)
		stop(t)
		start(t)

		after := getTLSSecret(t, ctx)
		if after.ResourceVersion != before.ResourceVersion {
			t.Errorf("restart rewrote the Secret (resourceVersion %s -> %s)", before.ResourceVersion, after.ResourceVersion)
		}
		mwc2, vwc2 := getWebhookConfigurations(t, ctx)
		if mwc2.ResourceVersion != mwc.ResourceVersion || vwc2.ResourceVersion != vwc.ResourceVersion {
			t.Errorf("restart patched the webhook configurations (resourceVersions %s/%s -> %s/%s)",
				mwc.ResourceVersion, vwc.ResourceVersion, mwc2.ResourceVersion, vwc2.ResourceVersion)
		}
		expectInjected(t, ctx, mustParseCerts(t, "ca.crt", after.Data[certs.KeyCA]))
		served := expectServing(t, ctx, env.port, after)
		if !served.Equal(first) {
			t.Errorf("the restarted coalmine serves another certificate (serial %s, want %s)", served.SerialNumber, first.SerialNumber)
		}
		if err := probe.denied(ctx); err != nil {
			t.Fatalf("malformed Canary: %v", err)
		}
	}) {
		return
	}

	if !t.Run("serving certificate near its end is replaced while admission continues", func(t *testing.T) {
		ctx := testContext(t, 2*time.Minute)
		s := getTLSSecret(t, ctx)
		cas := mustParseCerts(t, "ca.crt", s.Data[certs.KeyCA])
		old := mustParseCerts(t, "tls.crt", s.Data[certs.KeyCert])[0]
		caKey := mustParseKey(t, s.Data[certs.KeyCAKey])

		// A certificate from the same CA with minutes left: a third of its lifetime is
		// long gone, so the next pass of the running coalmine must replace it.
		certPEM, keyPEM := issueServing(t, cas[0], caKey, old, time.Now().Add(-time.Hour), time.Now().Add(5*time.Minute))
		short := mustParseCerts(t, "short-lived tls.crt", certPEM)[0]

		load := probe.startLoad(t)
		s.Data[certs.KeyCert], s.Data[certs.KeyKey] = certPEM, keyPEM
		if err := k8s.Update(ctx, s); err != nil {
			t.Fatalf("put a near-expiry serving certificate into the Secret: %v", err)
		}
		replaced := time.Now()
		var renewed *x509.Certificate
		waitFor(t, 60*time.Second, func(ctx context.Context) (bool, error) {
			served, err := servedCertificate(ctx, env.port)
			if err != nil {
				return false, err
			}
			if served.Equal(old) || served.Equal(short) {
				return false, fmt.Errorf("still serving serial %s", served.SerialNumber)
			}
			renewed = served
			return true, nil
		})
		t.Logf("new serving certificate served %s after the Secret was changed", time.Since(replaced).Round(time.Millisecond))
		load.awaitMore(t, 20)
		load.stop(t)

		after := getTLSSecret(t, ctx)
		expectServing(t, ctx, env.port, after)
		if time.Until(renewed.NotAfter) < 300*24*time.Hour {
			t.Errorf("renewed certificate ends %s, want a full lifetime", renewed.NotAfter)
		}
		if !bytes.Equal(after.Data[certs.KeyCA], s.Data[certs.KeyCA]) {
			t.Error("renewing the serving certificate changed the CA")
		}
		expectInjected(t, ctx, cas)
	}) {
		return
	}

	t.Run("CA near its end is rotated while admission continues", func(t *testing.T) {
		ctx := testContext(t, 2*time.Minute)
		s := getTLSSecret(t, ctx)
		ca := mustParseCerts(t, "ca.crt", s.Data[certs.KeyCA])[0]
		caKey := mustParseKey(t, s.Data[certs.KeyCAKey])
		servedBefore := mustParseCerts(t, "tls.crt", s.Data[certs.KeyCert])[0]

		// The same CA (name and key: the apiserver's bundle and the served certificate
		// stay valid) re-signed to end in minutes.
		ending := resignCA(t, ca, caKey, time.Now().Add(-time.Hour), time.Now().Add(10*time.Minute))
		load := probe.startLoad(t)
		s.Data[certs.KeyCA] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ending.Raw})
		if err := k8s.Update(ctx, s); err != nil {
			t.Fatalf("put a near-expiry CA into the Secret: %v", err)
		}
		replaced := time.Now()
		waitFor(t, 60*time.Second, func(ctx context.Context) (bool, error) {
			served, err := servedCertificate(ctx, env.port)
			if err != nil {
				return false, err
			}
			if served.Equal(servedBefore) {
				return false, fmt.Errorf("still serving serial %s", served.SerialNumber)
			}
			if bytes.Equal(served.RawIssuer, ca.RawSubject) {
				return false, fmt.Errorf("serving serial %s, still issued by the old CA", served.SerialNumber)
			}
			return true, nil
		})
		t.Logf("certificate of the new CA served %s after the Secret was changed", time.Since(replaced).Round(time.Millisecond))
		load.awaitMore(t, 20)
		load.stop(t)

		after := getTLSSecret(t, ctx)
		cas := mustParseCerts(t, "ca.crt", after.Data[certs.KeyCA])
		if len(cas) != 2 || !cas[1].Equal(ending) {
			t.Fatalf("after rotation ca.crt holds %d CAs, want the new one and the old one until it ends", len(cas))
		}
		// Both CAs are trusted, so replicas still serving the old CA's certificate work.
		expectInjected(t, ctx, cas)
		expectServing(t, ctx, env.port, after)
	})
}

// ---------------------------------------------------------------------------
// Admission through the apiserver

// admissionProbe sends Canaries through the apiserver with server-side dry-run: the
// seed's, which coalmine admits, and one with stepWeight above maxWeight, which only
// coalmine's webhook refuses (the CRD schema allows both values). The Canary webhook
// fails open, so the refusal proves the apiserver reached the webhook over TLS.
type admissionProbe struct {
	good, bad *unstructured.Unstructured
}

const canaryWebhook = "canaries.coalmine.dev"

func newAdmissionProbe(t *testing.T, ns string) *admissionProbe {
	t.Helper()
	seed := readYAML(t, "testdata/seed-canary.yaml")[0]
	seed.SetNamespace(ns)
	bad := seed.DeepCopy()
	if err := unstructured.SetNestedField(bad.Object, int64(60), "spec", "analysis", "stepWeight"); err != nil {
		t.Fatal(err)
	}
	return &admissionProbe{good: seed, bad: bad}
}

// denied returns nil when the webhook refused the malformed Canary with its message.
func (p *admissionProbe) denied(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := k8s.Create(ctx, p.bad.DeepCopy(), client.DryRunAll)
	switch {
	case err == nil:
		return errors.New("the malformed Canary was admitted: the apiserver did not reach the webhook")
	case !strings.Contains(err.Error(), fmt.Sprintf("admission webhook %q denied the request", canaryWebhook)) ||
		!strings.Contains(err.Error(), "spec.analysis.stepWeight"):
		return fmt.Errorf("the malformed Canary was refused, but not by the webhook's check: %w", err)
	}
	return nil
}

// allowed returns nil when the seed's Canary passes admission.
func (p *admissionProbe) allowed(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return k8s.Create(ctx, p.good.DeepCopy(), client.DryRunAll)
}

// admissionLoad sends the malformed Canary continuously and counts the answers that were
// not the webhook's refusal.
type admissionLoad struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	ok       int
	failures []string
}

// startLoad starts two senders (two connections' worth of calls from the apiserver).
func (p *admissionProbe) startLoad(t *testing.T) *admissionLoad {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	l := &admissionLoad{cancel: cancel}
	for range 2 {
		l.wg.Go(func() {
			for ctx.Err() == nil {
				err := p.denied(ctx)
				if ctx.Err() != nil {
					return
				}
				l.mu.Lock()
				if err != nil {
					l.failures = append(l.failures, time.Now().Format("15:04:05.000")+" "+err.Error())
				} else {
					l.ok++
				}
				l.mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	t.Cleanup(l.cancel)
	return l
}

// awaitMore waits until n more calls have been answered by the webhook, so the load
// covers the time after the change too.
func (l *admissionLoad) awaitMore(t *testing.T, n int) {
	t.Helper()
	l.mu.Lock()
	want := l.ok + n
	l.mu.Unlock()
	waitFor(t, 30*time.Second, func(context.Context) (bool, error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.ok < want {
			return false, fmt.Errorf("%d of %d admission calls answered by the webhook, %d not", l.ok, want, len(l.failures))
		}
		return true, nil
	})
}

// stop ends the load and fails the test if any call was not answered by the webhook.
func (l *admissionLoad) stop(t *testing.T) {
	t.Helper()
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("admission calls during the change: %d answered by the webhook, %d not", l.ok, len(l.failures))
	if len(l.failures) > 0 {
		t.Errorf("%d admission calls were not answered by the webhook during the change; first ones:\n%s",
			len(l.failures), strings.Join(l.failures[:min(5, len(l.failures))], "\n"))
	}
	if l.ok < 10 {
		t.Errorf("only %d admission calls succeeded during the change; the test proves little", l.ok)
	}
}

// ---------------------------------------------------------------------------
// What coalmine stored and serves

func getTLSSecret(t *testing.T, ctx context.Context) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: demo.Namespace, Name: certs.DefaultSecretName}, s); err != nil {
		t.Fatalf("get the serving Secret: %v", err)
	}
	return s
}

func getWebhookConfigurations(t *testing.T, ctx context.Context) (*admissionregistrationv1.MutatingWebhookConfiguration, *admissionregistrationv1.ValidatingWebhookConfiguration) {
	t.Helper()
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: certs.DefaultWebhookConfiguration}, mwc); err != nil {
		t.Fatalf("get MutatingWebhookConfiguration: %v", err)
	}
	if err := k8s.Get(ctx, client.ObjectKey{Name: certs.DefaultWebhookConfiguration}, vwc); err != nil {
		t.Fatalf("get ValidatingWebhookConfiguration: %v", err)
	}
	return mwc, vwc
}

// caBundles maps each webhook of both configurations to its caBundle.
func caBundles(t *testing.T, ctx context.Context) map[string][]byte {
	t.Helper()
	mwc, vwc := getWebhookConfigurations(t, ctx)
	out := map[string][]byte{}
	for _, w := range mwc.Webhooks {
		out["mutating "+w.Name] = w.ClientConfig.CABundle
	}
	for _, w := range vwc.Webhooks {
		out["validating "+w.Name] = w.ClientConfig.CABundle
	}
	return out
}

// clearCABundles removes the caBundle of every webhook, as a freshly applied manifest
// has none.
func clearCABundles(t *testing.T, ctx context.Context) {
	t.Helper()
	mwc, vwc := getWebhookConfigurations(t, ctx)
	remove := func(obj client.Object, n int, has func(int) bool) {
		var ops []map[string]string
		for i := range n {
			if has(i) {
				ops = append(ops, map[string]string{"op": "remove", "path": fmt.Sprintf("/webhooks/%d/clientConfig/caBundle", i)})
			}
		}
		if len(ops) == 0 {
			return
		}
		patch, _ := json.Marshal(ops)
		if err := k8s.Patch(ctx, obj, client.RawPatch(types.JSONPatchType, patch)); err != nil {
			t.Fatalf("clear caBundle of %s: %v", obj.GetName(), err)
		}
	}
	remove(mwc, len(mwc.Webhooks), func(i int) bool { return len(mwc.Webhooks[i].ClientConfig.CABundle) > 0 })
	remove(vwc, len(vwc.Webhooks), func(i int) bool { return len(vwc.Webhooks[i].ClientConfig.CABundle) > 0 })
}

// expectInjected checks that every webhook trusts exactly cas.
func expectInjected(t *testing.T, ctx context.Context, cas []*x509.Certificate) {
	t.Helper()
	bundles := caBundles(t, ctx)
	if want := shippedWebhooks(t); len(bundles) != want {
		t.Errorf("%d webhooks, want the shipped %d", len(bundles), want)
	}
	for name, b := range bundles {
		got, err := parsePEMCerts(b)
		if err != nil {
			t.Errorf("%s: caBundle: %v", name, err)
			continue
		}
		if !slices.EqualFunc(got, cas, (*x509.Certificate).Equal) {
			t.Errorf("%s trusts %d CAs that are not the Secret's %d", name, len(got), len(cas))
		}
	}
}

// expectServing checks that the webhook port serves the Secret's certificate, and that a
// client trusting only the injected caBundle (as a new apiserver connection does)
// verifies it for 127.0.0.1, the address the sandbox's webhook configurations call.
func expectServing(t *testing.T, ctx context.Context, port int, s *corev1.Secret) *x509.Certificate {
	t.Helper()
	want := mustParseCerts(t, "tls.crt", s.Data[certs.KeyCert])[0]
	var served *x509.Certificate
	// The certwatcher picks up new files within moments of the write.
	waitFor(t, 15*time.Second, func(ctx context.Context) (bool, error) {
		c, err := servedCertificate(ctx, port)
		if err != nil {
			return false, err
		}
		served = c
		if !c.Equal(want) {
			return false, fmt.Errorf("webhook serves serial %s, the Secret holds %s", c.SerialNumber, want.SerialNumber)
		}
		return true, nil
	})
	for name, bundle := range caBundles(t, ctx) {
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(bundle) {
			t.Errorf("%s: caBundle holds no certificate", name)
			continue
		}
		if _, err := served.Verify(x509.VerifyOptions{Roots: roots, DNSName: "127.0.0.1", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("%s: the served certificate does not verify against the injected caBundle: %v", name, err)
		}
	}
	return served
}

// servedCertificate reads the certificate the webhook server presents.
func servedCertificate(ctx context.Context, port int) (*x509.Certificate, error) {
	d := tls.Dialer{Config: &tls.Config{
		// Only reading what is served; expectServing verifies it against the caBundle.
		InsecureSkipVerify: true, //nolint:gosec // see above
		MinVersion:         tls.VersionTLS12,
	}}
	conn, err := d.DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, fmt.Errorf("connect to the webhook: %w", err)
	}
	defer conn.Close()
	peer := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(peer) == 0 {
		return nil, errors.New("the webhook presented no certificate")
	}
	return peer[0], nil
}

func expectReady(t *testing.T, ctx context.Context, in *demo.Instance) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+in.Options.HealthProbeBindAddress+"/readyz", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("readyz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz = %d, want 200", resp.StatusCode)
	}
}

// ---------------------------------------------------------------------------
// Certificates the test forges

func parsePEMCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate")
	}
	return out, nil
}

func mustParseCerts(t *testing.T, what string, data []byte) []*x509.Certificate {
	t.Helper()
	cs, err := parsePEMCerts(data)
	if err != nil {
		t.Fatalf("parse %s: %v", what, err)
	}
	return cs
}

func mustParseKey(t *testing.T, data []byte) crypto.Signer {
	t.Helper()
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatal("ca.key holds no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		t.Fatalf("parse ca.key: %v", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		t.Fatalf("ca.key of type %T cannot sign", key)
	}
	return signer
}

// issueServing signs a serving certificate for like's names with ca, valid from
// notBefore to notAfter.
func issueServing(t *testing.T, ca *x509.Certificate, caKey crypto.Signer, like *x509.Certificate, notBefore, notAfter time.Time) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(t),
		Subject:      like.Subject,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     like.DNSNames,
		IPAddresses:  like.IPAddresses,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

// resignCA returns ca re-signed by its own key with another validity: the same name and
// key, so what it signed still verifies against it.
func resignCA(t *testing.T, ca *x509.Certificate, key crypto.Signer, notBefore, notAfter time.Time) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(t),
		RawSubject:            ca.RawSubject,
		SubjectKeyId:          ca.SubjectKeyId,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              ca.KeyUsage,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        ca.MaxPathLenZero,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func randomSerial(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// shippedWebhooks counts the webhooks of the shipped configurations.
func shippedWebhooks(t *testing.T) int {
	t.Helper()
	objs, err := webhook.SandboxConfigurations(manifests.WebhookConfigurations, "https://127.0.0.1:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, o := range objs {
		switch c := o.(type) {
		case *admissionregistrationv1.MutatingWebhookConfiguration:
			n += len(c.Webhooks)
		case *admissionregistrationv1.ValidatingWebhookConfiguration:
			n += len(c.Webhooks)
		}
	}
	return n
}
