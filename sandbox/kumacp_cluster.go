package sandbox

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/yaml"
)

// What kuma-cp needs on its cluster besides Kuma's CRDs (installed by every sandbox):
// its namespace, identity and RBAC, a Pod object standing for the process, and its
// validating webhook configuration; and what a zone CP leaves behind, removed again.

// prepareKumaCluster creates the kuma-system namespace (waiting out the deletion of an
// earlier one), kuma-cp's ServiceAccount and RBAC, and the Pod named podName, and removes
// leader locks of an earlier kuma-cp.
func prepareKumaCluster(ctx context.Context, sb *Sandbox, podName string) error {
	err := Poll(ctx, time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		ns := &corev1.Namespace{}
		err := sb.client.Get(ctx, client.ObjectKey{Name: kumaSystemNamespace}, ns)
		if apierrors.IsNotFound(err) {
			ns.Name, ns.Labels = kumaSystemNamespace, map[string]string{"kuma.io/system-namespace": "true"}
			err = sb.client.Create(ctx, ns)
			return err == nil, err
		}
		if err == nil && ns.DeletionTimestamp != nil {
			err = errors.New("namespace kuma-system is still being deleted")
		}
		return err == nil, err
	})
	if err != nil {
		return err
	}
	docs, err := splitYAML(kumaRBAC)
	if err != nil {
		return fmt.Errorf("parse kuma-cp's RBAC: %w", err)
	}
	for _, doc := range docs {
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &obj.Object); err != nil {
			return fmt.Errorf("parse kuma-cp's RBAC: %w", err)
		}
		if err := sb.client.Create(ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %s %s: %w", obj.GetKind(), obj.GetName(), err)
		}
	}
	// The Pod is never scheduled (no node matches its selector): kuma-cp runs as a process
	// of the sandbox, and this object only gives it the identity its leader election
	// wants, a Pod to own the lock.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: podName, Namespace: kumaSystemNamespace,
			Labels:      map[string]string{"app": "kuma-control-plane"},
			Annotations: map[string]string{"sandbox.coalmine.dev/note": "kuma-cp runs out of cluster as a sandbox process; this Pod stands for it"},
		},
		Spec: corev1.PodSpec{
			ServiceAccountName:           kumaServiceAccount,
			AutomountServiceAccountToken: ptr.To(false),
			NodeSelector:                 map[string]string{"sandbox.coalmine.dev/kuma-cp": "out-of-cluster"},
			Containers:                   []corev1.Container{{Name: "control-plane", Image: "docker.io/kumahq/kuma-cp:" + KumaVersion[1:]}},
		},
	}
	if err := sb.client.Create(ctx, pod); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create kuma-cp's Pod: %w", err)
	}
	// An earlier kuma-cp's locks would hold this one up: 30 s for the old-style lock, for
	// ever for a new-style one owned by another Pod.
	for _, name := range []string{"cp-leader", "kuma-cp-leader"} {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: kumaSystemNamespace}}
		if err := client.IgnoreNotFound(sb.client.Delete(ctx, cm)); err != nil {
			return fmt.Errorf("delete stale leader lock %s: %w", name, err)
		}
	}
	return nil
}

// kumaValidatedResources are the rules of Kuma v1.8.1's validating webhook
// (validator.kuma-admission.kuma.io in deployments/charts/kuma/templates/
// cp-webhooks-and-secrets.yaml).
var kumaValidatedResources = []string{
	"circuitbreakers", "dataplanes", "externalservices", "faultinjections", "gatewayinstances",
	"healthchecks", "meshes", "meshgateways", "meshgatewayroutes", "proxytemplates", "ratelimits",
	"retries", "trafficlogs", "trafficpermissions", "trafficroutes", "traffictraces",
	"virtualoutbounds", "zones", "containerpatches",
}

// applyKumaWebhook registers Kuma's validating webhook, as its chart does, but calling
// kuma-cp at https://127.0.0.1:<port> instead of its Service.
func applyKumaWebhook(ctx context.Context, c client.Client, port int, ca []byte) error {
	url := fmt.Sprintf("https://127.0.0.1:%d/validate-kuma-io-v1alpha1", port)
	want := []admissionregistrationv1.ValidatingWebhook{{
		Name:                    kumaValidatorName,
		AdmissionReviewVersions: []string{"v1"},
		FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
		SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
		ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: ca},
		Rules: []admissionregistrationv1.RuleWithOperations{{
			Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update, admissionregistrationv1.Delete},
			Rule: admissionregistrationv1.Rule{
				APIGroups: []string{"kuma.io"}, APIVersions: []string{"v1alpha1"}, Resources: kumaValidatedResources,
			},
		}},
	}}
	wh := &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: kumaWebhookName}}
	if _, err := controllerutil.CreateOrUpdate(ctx, c, wh, func() error { wh.Webhooks = want; return nil }); err != nil {
		return fmt.Errorf("register Kuma's validating webhook: %w", err)
	}
	return nil
}

// removeTrafficRoutePolicy removes the emulated TrafficRoute validation (kuma.go).
func removeTrafficRoutePolicy(ctx context.Context, c client.Client) error {
	policy, binding, err := trafficRoutePolicyObjects()
	if err != nil {
		return err
	}
	for _, obj := range []client.Object{binding, policy} {
		if err := client.IgnoreNotFound(c.Delete(ctx, obj)); err != nil {
			return fmt.Errorf("remove the emulated TrafficRoute validation: %w", err)
		}
	}
	return nil
}

// cleanUpZone removes what the zone CP added to the zone sandbox, which outlives it:
// its webhook configuration first (it refuses every change to synced resources, and
// kuma-cp is stopped), the resources it synced, its namespace and RBAC; and brings the
// emulated TrafficRoute validation back for the scenarios that follow.
func cleanUpZone(ctx context.Context, sb *Sandbox) error {
	wh := &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: kumaWebhookName}}
	errs := []error{client.IgnoreNotFound(sb.client.Delete(ctx, wh))}
	errs = append(errs, deleteWrittenBy(ctx, sb.client, KumaManager))
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: kumaSystemNamespace}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: kumaServiceAccount}},
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: kumaServiceAccount}},
	} {
		errs = append(errs, client.IgnoreNotFound(sb.client.Delete(ctx, obj)))
	}
	errs = append(errs, installTrafficRoutePolicy(ctx, sb.client))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean up after the zone CP: %w", err)
	}
	return nil
}

// deleteWrittenBy deletes every kuma.io resource that field manager wrote: on a zone,
// what kuma-cp synced from the Global CP.
func deleteWrittenBy(ctx context.Context, c client.Client, manager string) error {
	crds := &apiextensionsv1.CustomResourceDefinitionList{}
	if err := c.List(ctx, crds); err != nil {
		return fmt.Errorf("list CRDs: %w", err)
	}
	var errs []error
	for _, crd := range crds.Items {
		if crd.Spec.Group != "kuma.io" || len(crd.Spec.Versions) == 0 {
			continue
		}
		list := &unstructured.UnstructuredList{}
		list.SetAPIVersion(crd.Spec.Group + "/" + crd.Spec.Versions[0].Name)
		list.SetKind(crd.Spec.Names.ListKind)
		if err := c.List(ctx, list); err != nil {
			errs = append(errs, fmt.Errorf("list %s: %w", crd.Spec.Names.Plural, err))
			continue
		}
		for i := range list.Items {
			obj := &list.Items[i]
			for _, f := range obj.GetManagedFields() {
				if f.Manager == manager {
					errs = append(errs, client.IgnoreNotFound(c.Delete(ctx, obj)))
					break
				}
			}
		}
	}
	return errors.Join(errs...)
}

// writeKumaCerts writes a CA (ca.crt) and a serving certificate for 127.0.0.1 and
// localhost signed by it (tls.crt, tls.key) into dir: kuma-cp's general certificate (KDS
// server, API server) and its admission server's, which the apiservers and the zone's
// KDS client trust through the CA.
func writeKumaCerts(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create kuma-cp certificate directory: %w", err)
	}
	now := time.Now()
	// RSA, as the certificates Kuma's chart generates: nothing in kuma-cp then meets a
	// key type it did not expect.
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("generate kuma-cp CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sandbox kuma-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("create kuma-cp CA: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return fmt.Errorf("parse kuma-cp CA: %w", err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("generate kuma-cp key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kuma-control-plane"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		DNSNames:    []string{"localhost", "kuma-control-plane.kuma-system.svc"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("create kuma-cp certificate: %w", err)
	}
	keyDER := x509.MarshalPKCS1PrivateKey(key)
	files := map[string][]byte{
		"ca.crt":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		"tls.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"tls.key": pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: keyDER}),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return fmt.Errorf("write kuma-cp %s: %w", name, err)
		}
	}
	return nil
}
