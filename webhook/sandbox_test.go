package webhook

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/manifests"
)

// shipped decodes manifests/webhook/base/webhooks.yaml.
func shipped(t *testing.T) (*admissionregistrationv1.MutatingWebhookConfiguration, *admissionregistrationv1.ValidatingWebhookConfiguration) {
	t.Helper()
	var m *admissionregistrationv1.MutatingWebhookConfiguration
	var v *admissionregistrationv1.ValidatingWebhookConfiguration
	for _, doc := range yamlDocs(t, manifests.WebhookConfigurations) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatal(err)
		}
		switch tm.Kind {
		case "MutatingWebhookConfiguration":
			m = &admissionregistrationv1.MutatingWebhookConfiguration{}
			if err := yaml.UnmarshalStrict(doc, m); err != nil {
				t.Fatal(err)
			}
		case "ValidatingWebhookConfiguration":
			v = &admissionregistrationv1.ValidatingWebhookConfiguration{}
			if err := yaml.UnmarshalStrict(doc, v); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unexpected kind %q", tm.Kind)
		}
	}
	if m == nil || v == nil {
		t.Fatal("webhooks.yaml lacks a configuration")
	}
	return m, v
}

func yamlDocs(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var docs [][]byte
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) > 0 {
			docs = append(docs, doc)
		}
	}
}

func stripComments(b []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// The shipped configuration is the contract of DESIGN §3 and HELPERS' agreed names.
func TestShippedWebhookConfigurations(t *testing.T) {
	m, v := shipped(t)
	if m.Name != "coalmine" || v.Name != "coalmine" {
		t.Errorf("names %q %q, want coalmine", m.Name, v.Name)
	}
	excluded := func(t *testing.T, sel *metav1.LabelSelector, mesh bool) {
		t.Helper()
		var notIn, in bool
		for _, e := range sel.MatchExpressions {
			if e.Key == "kubernetes.io/metadata.name" && e.Operator == metav1.LabelSelectorOpNotIn &&
				slices.Contains(e.Values, "kube-system") && slices.Contains(e.Values, "coalmine-system") {
				notIn = true
			}
			if e.Key == v1beta1.LabelSidecarInjection && e.Operator == metav1.LabelSelectorOpIn && slices.Equal(e.Values, []string{"enabled"}) {
				in = true
			}
		}
		if !notIn {
			t.Errorf("namespaceSelector does not exclude kube-system and coalmine-system")
		}
		if in != mesh {
			t.Errorf("namespaceSelector on %s: %v, want %v", v1beta1.LabelSidecarInjection, in, mesh)
		}
	}
	common := func(t *testing.T, path string, cc admissionregistrationv1.WebhookClientConfig, se *admissionregistrationv1.SideEffectClass,
		timeout *int32, mp *admissionregistrationv1.MatchPolicyType, versions []string) {
		t.Helper()
		if s := cc.Service; s == nil || s.Namespace != "coalmine-system" || s.Name != "coalmine-webhook" || s.Path == nil || *s.Path != path {
			t.Errorf("clientConfig.service %+v, want coalmine-system/coalmine-webhook%s", s, path)
		}
		if se == nil || *se != admissionregistrationv1.SideEffectClassNone {
			t.Errorf("sideEffects %v, want None", se)
		}
		if timeout == nil || *timeout > 5 {
			t.Errorf("timeoutSeconds %v, want <= 5", timeout)
		}
		if mp == nil || *mp != admissionregistrationv1.Equivalent {
			t.Errorf("matchPolicy %v, want Equivalent", mp)
		}
		if !slices.Equal(versions, []string{"v1"}) {
			t.Errorf("admissionReviewVersions %v", versions)
		}
	}

	if len(m.Webhooks) != 2 {
		t.Fatalf("%d mutating webhooks, want 2", len(m.Webhooks))
	}
	d := m.Webhooks[0]
	t.Run(d.Name, func(t *testing.T) {
		common(t, PathMutateDeployment, d.ClientConfig, d.SideEffects, d.TimeoutSeconds, d.MatchPolicy, d.AdmissionReviewVersions)
		excluded(t, d.NamespaceSelector, true)
		if d.FailurePolicy == nil || *d.FailurePolicy != admissionregistrationv1.Fail {
			t.Errorf("failurePolicy %v, want Fail", d.FailurePolicy)
		}
		if d.ObjectSelector == nil || d.ObjectSelector.MatchLabels[v1beta1.LabelManaged] != "true" {
			t.Errorf("objectSelector %v, want %s=true", d.ObjectSelector, v1beta1.LabelManaged)
		}
		if len(d.Rules) != 1 || !slices.Equal(d.Rules[0].Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Update}) ||
			!slices.Equal(d.Rules[0].Resources, []string{"deployments"}) || !slices.Equal(d.Rules[0].APIGroups, []string{"apps"}) {
			t.Errorf("rules %+v, want apps deployments UPDATE", d.Rules)
		}
	})

	// The command stamp: every Canary with a command, wherever it lives (as the Canary
	// validator), fails open, only for Canaries carrying a command or a stamp.
	cmd := m.Webhooks[1]
	t.Run(cmd.Name, func(t *testing.T) {
		common(t, PathMutateCanary, cmd.ClientConfig, cmd.SideEffects, cmd.TimeoutSeconds, cmd.MatchPolicy, cmd.AdmissionReviewVersions)
		excluded(t, cmd.NamespaceSelector, false)
		if cmd.FailurePolicy == nil || *cmd.FailurePolicy != admissionregistrationv1.Ignore {
			t.Errorf("failurePolicy %v, want Ignore", cmd.FailurePolicy)
		}
		if cmd.ObjectSelector != nil {
			t.Errorf("objectSelector %v, want none", cmd.ObjectSelector)
		}
		ops := []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update}
		if len(cmd.Rules) != 1 || !slices.Equal(cmd.Rules[0].Operations, ops) ||
			!slices.Equal(cmd.Rules[0].Resources, []string{"canaries"}) || !slices.Equal(cmd.Rules[0].APIGroups, []string{"coalmine.dev"}) {
			t.Errorf("rules %+v, want coalmine.dev canaries CREATE, UPDATE (not canaries/status)", cmd.Rules)
		}
		if len(cmd.MatchConditions) != 1 || !strings.Contains(cmd.MatchConditions[0].Expression, v1beta1.AnnotationCommand) ||
			!strings.Contains(cmd.MatchConditions[0].Expression, v1beta1.AnnotationCommandBy) {
			t.Errorf("matchConditions %+v, want one on %s and %s", cmd.MatchConditions, v1beta1.AnnotationCommand, v1beta1.AnnotationCommandBy)
		}
	})

	want := map[string]struct {
		path, group, resource string
		mesh                  bool
	}{
		"services.coalmine.dev":        {PathValidateService, "", "services", true},
		"canaries.coalmine.dev":        {PathValidateCanary, "coalmine.dev", "canaries", false},
		"metrictemplates.coalmine.dev": {PathValidateMetricTemplate, "coalmine.dev", "metrictemplates", false},
	}
	if len(v.Webhooks) != len(want) {
		t.Fatalf("%d validating webhooks, want %d", len(v.Webhooks), len(want))
	}
	for _, w := range v.Webhooks {
		t.Run(w.Name, func(t *testing.T) {
			exp, ok := want[w.Name]
			if !ok {
				t.Fatalf("unexpected webhook")
			}
			common(t, exp.path, w.ClientConfig, w.SideEffects, w.TimeoutSeconds, w.MatchPolicy, w.AdmissionReviewVersions)
			excluded(t, w.NamespaceSelector, exp.mesh)
			if w.FailurePolicy == nil || *w.FailurePolicy != admissionregistrationv1.Ignore {
				t.Errorf("failurePolicy %v, want Ignore", w.FailurePolicy)
			}
			ops := []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update}
			if len(w.Rules) != 1 || !slices.Equal(w.Rules[0].Operations, ops) ||
				!slices.Equal(w.Rules[0].Resources, []string{exp.resource}) || !slices.Equal(w.Rules[0].APIGroups, []string{exp.group}) {
				t.Errorf("rules %+v", w.Rules)
			}
		})
	}
	// Every path the configuration calls is served.
	for path := range Handlers(nil, Options{ControllerUsername: controllerUser}) {
		found := false
		for _, w := range m.Webhooks {
			found = found || *w.ClientConfig.Service.Path == path
		}
		for _, w := range v.Webhooks {
			found = found || *w.ClientConfig.Service.Path == path
		}
		if !found {
			t.Errorf("handler %s is not called by any webhook", path)
		}
	}
}

func TestSandboxConfigurations(t *testing.T) {
	ca := []byte("-----BEGIN CERTIFICATE-----\nsandbox\n-----END CERTIFICATE-----\n")
	objs, err := SandboxConfigurations(manifests.WebhookConfigurations, "https://127.0.0.1:40123/", ca)
	if err != nil {
		t.Fatal(err)
	}
	m, v := shipped(t)
	if len(objs) != 2 {
		t.Fatalf("%d objects, want 2", len(objs))
	}
	gotM, ok1 := objs[0].(*admissionregistrationv1.MutatingWebhookConfiguration)
	gotV, ok2 := objs[1].(*admissionregistrationv1.ValidatingWebhookConfiguration)
	if !ok1 || !ok2 {
		t.Fatalf("got %T, %T", objs[0], objs[1])
	}
	for i, w := range gotM.Webhooks {
		want := "https://127.0.0.1:40123" + *m.Webhooks[i].ClientConfig.Service.Path
		if w.ClientConfig.Service != nil || w.ClientConfig.URL == nil || *w.ClientConfig.URL != want || !bytes.Equal(w.ClientConfig.CABundle, ca) {
			t.Errorf("%s clientConfig %+v, want url %s and the CA", w.Name, w.ClientConfig, want)
		}
		// Everything but the client config is as shipped.
		w.ClientConfig = m.Webhooks[i].ClientConfig
		if !equality.Semantic.DeepEqual(w, m.Webhooks[i]) {
			t.Errorf("%s changed beyond clientConfig", w.Name)
		}
	}
	for i, w := range gotV.Webhooks {
		want := "https://127.0.0.1:40123" + *v.Webhooks[i].ClientConfig.Service.Path
		if w.ClientConfig.Service != nil || w.ClientConfig.URL == nil || *w.ClientConfig.URL != want || !bytes.Equal(w.ClientConfig.CABundle, ca) {
			t.Errorf("%s clientConfig %+v, want url %s and the CA", w.Name, w.ClientConfig, want)
		}
		w.ClientConfig = v.Webhooks[i].ClientConfig
		if !equality.Semantic.DeepEqual(w, v.Webhooks[i]) {
			t.Errorf("%s changed beyond clientConfig", w.Name)
		}
	}
}

// The kustomize overlay manifests/webhook/sandbox and SandboxConfigurations must agree:
// render the overlay as `kubectl kustomize manifests/webhook/sandbox` does (kustomize as a
// library, default load restrictions) and compare.
func TestSandboxOverlayAgreesWithSandboxConfigurations(t *testing.T) {
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(manifests.WebhookSandboxKustomization, &k); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(k.Resources, []string{"../base"}) {
		t.Errorf("resources %v, want the shipped configurations ../base", k.Resources)
	}
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join("..", "manifests", "webhook", "sandbox"))
	if err != nil {
		t.Fatalf("kustomize build manifests/webhook/sandbox: %v", err)
	}
	out, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	var fromOverlay []client.Object
	for _, doc := range yamlDocs(t, bytes.ReplaceAll(out, []byte("127.0.0.1:9443"), []byte("127.0.0.1:40123"))) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatal(err)
		}
		switch tm.Kind {
		case "MutatingWebhookConfiguration":
			var c admissionregistrationv1.MutatingWebhookConfiguration
			if err := yaml.UnmarshalStrict(doc, &c); err != nil {
				t.Fatal(err)
			}
			fromOverlay = append(fromOverlay, &c)
		case "ValidatingWebhookConfiguration":
			var c admissionregistrationv1.ValidatingWebhookConfiguration
			if err := yaml.UnmarshalStrict(doc, &c); err != nil {
				t.Fatal(err)
			}
			fromOverlay = append(fromOverlay, &c)
		default:
			t.Fatalf("overlay renders an unexpected %s", tm.Kind)
		}
	}
	fromGo, err := SandboxConfigurations(manifests.WebhookConfigurations, "https://127.0.0.1:40123", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(fromOverlay, fromGo) {
		t.Fatalf("overlay and SandboxConfigurations differ:\noverlay: %s\ngo:      %s", mustJSON(t, fromOverlay), mustJSON(t, fromGo))
	}
}

func TestSandboxConfigurationsRefusesOtherKinds(t *testing.T) {
	_, err := SandboxConfigurations([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"), "https://127.0.0.1:1", nil)
	if err == nil || !strings.Contains(err.Error(), `unexpected kind "ConfigMap"`) {
		t.Fatalf("got %v", err)
	}
}
