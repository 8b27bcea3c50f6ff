package webhook

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// SandboxConfigurations turns the shipped webhook configurations (manifests/webhook/base/
// webhooks.yaml, embedded as manifests.WebhookConfigurations) into ones that call a
// coalmine running on this machine: each webhook's clientConfig.service becomes
// url = baseURL + the service's path, with caBundle set. Rules, selectors and policies
// stay as shipped. It does what the kustomize overlay manifests/webhook/sandbox does,
// for a port chosen at run time (baseURL e.g. "https://127.0.0.1:40123").
func SandboxConfigurations(manifest []byte, baseURL string, caBundle []byte) ([]client.Object, error) {
	baseURL = strings.TrimSuffix(baseURL, "/")
	if baseURL == "" {
		return nil, errors.New("sandbox webhook configurations: baseURL is empty")
	}
	loopback := func(name string, cc *admissionregistrationv1.WebhookClientConfig) error {
		if cc.Service == nil {
			return fmt.Errorf("webhook %s has no clientConfig.service", name)
		}
		path := "/"
		if cc.Service.Path != nil {
			path = *cc.Service.Path
		}
		url := baseURL + path
		cc.Service = nil
		cc.URL = &url
		cc.CABundle = append([]byte(nil), caBundle...)
		return nil
	}

	var out []client.Object
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	for {
		var raw map[string]any
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("sandbox webhook configurations: decode manifest: %w", err)
		}
		if len(raw) == 0 {
			continue // an empty document between two ---
		}
		doc, err := yaml.Marshal(raw)
		if err != nil {
			return nil, fmt.Errorf("sandbox webhook configurations: re-encode document: %w", err)
		}
		switch kind, _ := raw["kind"].(string); kind {
		case "MutatingWebhookConfiguration":
			var c admissionregistrationv1.MutatingWebhookConfiguration
			if err := yaml.UnmarshalStrict(doc, &c); err != nil {
				return nil, fmt.Errorf("sandbox webhook configurations: decode %s: %w", kind, err)
			}
			for i := range c.Webhooks {
				if err := loopback(c.Webhooks[i].Name, &c.Webhooks[i].ClientConfig); err != nil {
					return nil, fmt.Errorf("sandbox webhook configurations: %s %s: %w", kind, c.Name, err)
				}
			}
			out = append(out, &c)
		case "ValidatingWebhookConfiguration":
			var c admissionregistrationv1.ValidatingWebhookConfiguration
			if err := yaml.UnmarshalStrict(doc, &c); err != nil {
				return nil, fmt.Errorf("sandbox webhook configurations: decode %s: %w", kind, err)
			}
			for i := range c.Webhooks {
				if err := loopback(c.Webhooks[i].Name, &c.Webhooks[i].ClientConfig); err != nil {
					return nil, fmt.Errorf("sandbox webhook configurations: %s %s: %w", kind, c.Name, err)
				}
			}
			out = append(out, &c)
		default:
			return nil, fmt.Errorf("sandbox webhook configurations: unexpected kind %q in the manifest", kind)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("sandbox webhook configurations: the manifest holds no webhook configuration")
	}
	return out, nil
}
