package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

const ns = "coalmine-system"

var secretKey = types.NamespacedName{Namespace: ns, Name: DefaultSecretName}

func scheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := admissionregistrationv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// webhookConfigs are the shipped configurations as the apiserver holds them before
// injection: one mutating webhook, three validating ones (one with a stale bundle).
func webhookConfigs() []client.Object {
	svc := func(path string) admissionregistrationv1.WebhookClientConfig {
		return admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{Namespace: ns, Name: DefaultServiceName, Path: &path}}
	}
	return []client.Object{
		&admissionregistrationv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: "coalmine"},
			Webhooks: []admissionregistrationv1.MutatingWebhook{
				{Name: "deployments.coalmine.dev", ClientConfig: svc("/mutate-apps-v1-deployment")},
			},
		},
		&admissionregistrationv1.ValidatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: "coalmine"},
			Webhooks: []admissionregistrationv1.ValidatingWebhook{
				{Name: "services.coalmine.dev", ClientConfig: svc("/validate-v1-service")},
				{Name: "canaries.coalmine.dev", ClientConfig: func() admissionregistrationv1.WebhookClientConfig {
					c := svc("/validate-coalmine-dev-v1beta1-canary")
					c.CABundle = []byte("stale")
					return c
				}()},
				{Name: "metrictemplates.coalmine.dev", ClientConfig: svc("/validate-coalmine-dev-v1beta1-metrictemplate")},
			},
		},
		// Someone else's configuration must never be touched.
		&admissionregistrationv1.ValidatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: "other"},
			Webhooks:   []admissionregistrationv1.ValidatingWebhook{{Name: "other.example.com"}},
		},
	}
}

func newFakeClient(t *testing.T, objs ...client.Object) client.WithWatch {
	t.Helper()
	return fake.NewClientBuilder().WithScheme(scheme(t)).WithObjects(objs...).Build()
}

func newManager(t *testing.T, c client.Client, clk *clocktesting.FakeClock) *Manager {
	t.Helper()
	return New(c, Options{
		Namespace:   ns,
		CertDir:     t.TempDir(),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		Clock:       clk,
	})
}

func getSecret(t *testing.T, c client.Client) *corev1.Secret {
	t.Helper()
	s := &corev1.Secret{}
	if err := c.Get(context.Background(), secretKey, s); err != nil {
		t.Fatalf("get secret: %v", err)
	}
	return s
}

// assertServes checks that m's cert dir holds exactly the Secret's serving pair.
func assertServes(t *testing.T, m *Manager, s *corev1.Secret) {
	t.Helper()
	for file, key := range map[string]string{FileCert: KeyCert, FileKey: KeyKey} {
		got, err := os.ReadFile(filepath.Join(m.opts.CertDir, file))
		if err != nil {
			t.Fatalf("read %s: %v", file, err)
		}
		if !bytes.Equal(got, s.Data[key]) {
			t.Fatalf("%s in %s differs from the Secret's %s", file, m.opts.CertDir, key)
		}
	}
}

// assertInjected checks every webhook of both coalmine configurations trusts want, and
// the unrelated configuration was left alone.
func assertInjected(t *testing.T, c client.Client, want []byte) {
	t.Helper()
	ctx := context.Background()
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := c.Get(ctx, types.NamespacedName{Name: "coalmine"}, mwc); err != nil {
		t.Fatal(err)
	}
	for _, w := range mwc.Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, want) {
			t.Errorf("mutating webhook %s: caBundle not injected", w.Name)
		}
	}
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if err := c.Get(ctx, types.NamespacedName{Name: "coalmine"}, vwc); err != nil {
		t.Fatal(err)
	}
	for _, w := range vwc.Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, want) {
			t.Errorf("validating webhook %s: caBundle not injected", w.Name)
		}
	}
	other := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if err := c.Get(ctx, types.NamespacedName{Name: "other"}, other); err != nil {
		t.Fatal(err)
	}
	if len(other.Webhooks[0].ClientConfig.CABundle) != 0 {
		t.Error("an unrelated webhook configuration was modified")
	}
}

func TestEnsureFreshStart(t *testing.T) {
	c := newFakeClient(t, webhookConfigs()...)
	clk := clocktesting.NewFakeClock(t0)
	m := newManager(t, c, clk)

	if err := m.ReadyCheck(nil); err == nil {
		t.Fatal("ready before the first pass")
	}
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	s := getSecret(t, c)
	if s.Type != corev1.SecretTypeTLS {
		t.Errorf("secret type %s, want %s", s.Type, corev1.SecretTypeTLS)
	}
	for _, k := range []string{KeyCert, KeyKey, KeyCA, KeyCAKey} {
		if len(s.Data[k]) == 0 {
			t.Errorf("secret lacks %s", k)
		}
	}
	assertServes(t, m, s)
	assertInjected(t, c, s.Data[KeyCA])
	if err := m.ReadyCheck(nil); err != nil {
		t.Fatalf("not ready after a successful pass: %v", err)
	}

	// The files are what controller-runtime's webhook server loads.
	cw, err := certwatcher.New(filepath.Join(m.opts.CertDir, FileCert), filepath.Join(m.opts.CertDir, FileKey))
	if err != nil {
		t.Fatalf("certwatcher cannot load the written files: %v", err)
	}
	served, err := cw.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf := parseBundle(s.Data).cert
	if !bytes.Equal(served.Certificate[0], leaf.Raw) {
		t.Fatal("certwatcher serves another certificate than the Secret's")
	}
	for _, host := range []string{"coalmine-webhook.coalmine-system.svc", "coalmine-webhook.coalmine-system.svc.cluster.local", "127.0.0.1"} {
		if err := leaf.VerifyHostname(host); err != nil {
			t.Errorf("serving certificate: %v", err)
		}
	}
}

func TestEnsureRestartReusesTheSecret(t *testing.T) {
	c := newFakeClient(t, webhookConfigs()...)
	clk := clocktesting.NewFakeClock(t0)
	if err := newManager(t, c, clk).Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := getSecret(t, c)

	clk.Step(30 * day)
	restarted := newManager(t, c, clk) // a new pod: empty cert dir
	if err := restarted.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	after := getSecret(t, c)
	if after.ResourceVersion != before.ResourceVersion {
		t.Fatal("a restart with a valid Secret rewrote it")
	}
	assertServes(t, restarted, after)
}

func TestEnsureRenewsNearExpiry(t *testing.T) {
	c := newFakeClient(t, webhookConfigs()...)
	clk := clocktesting.NewFakeClock(t0)
	m := newManager(t, c, clk)
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	cw, err := certwatcher.New(filepath.Join(m.opts.CertDir, FileCert), filepath.Join(m.opts.CertDir, FileKey))
	if err != nil {
		t.Fatal(err)
	}
	before := getSecret(t, c)
	first, _ := cw.GetCertificate(nil)

	clk.Step(250 * day) // less than a third of a year left
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	after := getSecret(t, c)
	if bytes.Equal(after.Data[KeyCert], before.Data[KeyCert]) {
		t.Fatal("serving certificate not renewed near expiry")
	}
	if !bytes.Equal(after.Data[KeyCA], before.Data[KeyCA]) {
		t.Fatal("CA changed on a serving certificate renewal")
	}
	assertServes(t, m, after)
	if err := cw.ReadCertificate(); err != nil {
		t.Fatalf("certwatcher cannot reload the renewed files: %v", err)
	}
	if second, _ := cw.GetCertificate(nil); bytes.Equal(first.Certificate[0], second.Certificate[0]) {
		t.Fatal("certwatcher still serves the old certificate")
	}
}

func TestEnsureRotatesTheCA(t *testing.T) {
	c := newFakeClient(t, webhookConfigs()...)
	clk := clocktesting.NewFakeClock(t0)
	m := newManager(t, c, clk)
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	oldCA := getSecret(t, c).Data[KeyCA]

	clk.Step(7 * year)
	if err := m.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := getSecret(t, c)
	if !bytes.HasSuffix(s.Data[KeyCA], oldCA) || bytes.Equal(s.Data[KeyCA], oldCA) {
		t.Fatal("rotated ca.crt should hold a new CA followed by the old one")
	}
	assertInjected(t, c, s.Data[KeyCA])
	assertServes(t, m, s)
	if err := m.ReadyCheck(nil); err != nil {
		t.Fatalf("not ready after CA rotation: %v", err)
	}
}

func TestRaceOnCreateLoserUsesWinnersCertificate(t *testing.T) {
	base := newFakeClient(t, webhookConfigs()...)
	clk := clocktesting.NewFakeClock(t0)
	winner := newManager(t, base, clk)

	raced := false
	loserClient := interceptor.NewClient(base, interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if _, ok := obj.(*corev1.Secret); ok && !raced {
				// The loser saw no Secret; the winner creates it before the loser's create.
				raced = true
				if err := winner.Ensure(ctx); err != nil {
					t.Errorf("winner Ensure: %v", err)
				}
			}
			return c.Create(ctx, obj, opts...)
		},
	})
	loser := newManager(t, loserClient, clk)
	if err := loser.Ensure(context.Background()); err != nil {
		t.Fatalf("loser Ensure: %v", err)
	}
	if !raced {
		t.Fatal("the race was not staged")
	}
	s := getSecret(t, base)
	assertServes(t, winner, s)
	assertServes(t, loser, s)
	assertInjected(t, base, s.Data[KeyCA])
}

func TestRaceOnRenewLoserUsesWinnersCertificate(t *testing.T) {
	base := newFakeClient(t, webhookConfigs()...)
	clk := clocktesting.NewFakeClock(t0)
	winner := newManager(t, base, clk)
	if err := winner.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	clk.Step(250 * day)

	raced := false
	updates := 0
	loserClient := interceptor.NewClient(base, interceptor.Funcs{
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if _, ok := obj.(*corev1.Secret); ok {
				updates++
				if !raced {
					raced = true
					if err := winner.Ensure(ctx); err != nil {
						t.Errorf("winner Ensure: %v", err)
					}
				}
			}
			return c.Update(ctx, obj, opts...)
		},
	})
	loser := newManager(t, loserClient, clk)
	if err := loser.Ensure(context.Background()); err != nil {
		t.Fatalf("loser Ensure: %v", err)
	}
	if updates != 1 {
		t.Fatalf("loser tried %d updates; want 1 (conflict, then keep the winner's)", updates)
	}
	s := getSecret(t, base)
	assertServes(t, winner, s)
	assertServes(t, loser, s)
}

func TestConcurrentReplicasConverge(t *testing.T) {
	base := newFakeClient(t, webhookConfigs()...)
	clk := clocktesting.NewFakeClock(t0)
	replicas := make([]*Manager, 4)
	for i := range replicas {
		replicas[i] = newManager(t, base, clk)
	}
	var wg sync.WaitGroup
	for _, m := range replicas {
		wg.Go(func() {
			if err := m.Ensure(context.Background()); err != nil {
				t.Errorf("Ensure: %v", err)
			}
		})
	}
	wg.Wait()
	s := getSecret(t, base)
	for _, m := range replicas {
		assertServes(t, m, s)
	}
	assertInjected(t, base, s.Data[KeyCA])
}

func TestMissingWebhookConfigurationKeepsNotReady(t *testing.T) {
	c := newFakeClient(t, webhookConfigs()[0]) // the validating one is missing
	m := newManager(t, c, clocktesting.NewFakeClock(t0))
	err := m.Ensure(context.Background())
	if !errors.Is(err, ErrNotInjected) || !strings.Contains(err.Error(), "ValidatingWebhookConfiguration coalmine") {
		t.Fatalf("Ensure error = %v, want ErrNotInjected naming the missing configuration", err)
	}
	if _, statErr := os.Stat(filepath.Join(m.opts.CertDir, FileCert)); statErr != nil {
		t.Fatal("certificate should be written even when injection fails")
	}
	if err := m.ReadyCheck(nil); err == nil || !strings.Contains(err.Error(), "not injected") {
		t.Fatalf("ReadyCheck = %v, want not injected", err)
	}
	// Webhook configurations are never created by the manager.
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if err := c.Get(context.Background(), types.NamespacedName{Name: "coalmine"}, vwc); err == nil {
		t.Fatal("the manager created a webhook configuration")
	}
}

func TestCABundlePatch(t *testing.T) {
	bundle := []byte("-----BEGIN CERTIFICATE-----\n")
	tests := []struct {
		name     string
		webhooks []webhookCA
		changes  int
		want     string
	}{
		{"all set: no patch", []webhookCA{{"a", bundle}}, 0, ""},
		{"only the stale one", []webhookCA{{"a", bundle}, {"b", []byte("old")}}, 1,
			`[{"op":"test","path":"/webhooks/1/name","value":"b"},{"op":"add","path":"/webhooks/1/clientConfig/caBundle","value":"LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="}]`},
		{"no webhooks", nil, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			patch, n, err := caBundlePatch(tt.webhooks, bundle)
			if err != nil {
				t.Fatal(err)
			}
			if n != tt.changes || string(patch) != tt.want {
				t.Fatalf("caBundlePatch = %d, %s; want %d, %s", n, patch, tt.changes, tt.want)
			}
		})
	}
}

func TestStartRestoresABlankedCABundle(t *testing.T) {
	c := newFakeClient(t, webhookConfigs()...)
	clk := clocktesting.NewFakeClock(t0)
	m := newManager(t, c, clk)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start returned %v", err)
		}
	}()
	await(t, "ready", func() bool { return m.ReadyCheck(nil) == nil })
	want := getSecret(t, c).Data[KeyCA]

	// A re-applied manifest blanks the caBundle.
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if err := c.Get(ctx, types.NamespacedName{Name: "coalmine"}, vwc); err != nil {
		t.Fatal(err)
	}
	for i := range vwc.Webhooks {
		vwc.Webhooks[i].ClientConfig.CABundle = nil
	}
	if err := c.Update(ctx, vwc); err != nil {
		t.Fatal(err)
	}
	if err := m.ReadyCheck(nil); err != nil {
		t.Fatalf("readiness must not flap on a blanked caBundle: %v", err)
	}

	await(t, "resync timer", clk.HasWaiters)
	clk.Step(DefaultResyncInterval)
	await(t, "caBundle restored", func() bool {
		got := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		return c.Get(ctx, types.NamespacedName{Name: "coalmine"}, got) == nil &&
			bytes.Equal(got.Webhooks[0].ClientConfig.CABundle, want)
	})
	assertInjected(t, c, want)
}

func TestNeedsNoLeaderElection(t *testing.T) {
	if New(nil, Options{}).NeedLeaderElection() {
		t.Fatal("every replica serves webhooks; the certificate manager must run on all of them")
	}
}

func TestWrittenFilesAreAtomicAndPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	data := mustApply(t, actionNewCA, bundle{}, t0, svcNames)
	changed, err := writeFiles(dir, data[KeyCert], data[KeyKey])
	if err != nil || !changed {
		t.Fatalf("writeFiles = %v, %v; want changed", changed, err)
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, FileCert), filepath.Join(dir, FileKey)); err != nil {
		t.Fatalf("written pair does not load: %v", err)
	}
	info, err := os.Stat(filepath.Join(dir, FileKey))
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode %o, want 600", perm)
	}
	changed, err = writeFiles(dir, data[KeyCert], data[KeyKey])
	if err != nil || changed {
		t.Fatalf("rewriting the same pair = %v, %v; want unchanged", changed, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Fatalf("cert dir holds %d entries, want tls.crt and tls.key only (no temporary files left)", len(entries))
	}
}

func await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, 10*time.Second, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}
