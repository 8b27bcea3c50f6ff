package sandbox

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/yaml"
)

// MeshHTTPRouteCRD is the sandbox's MeshHTTPRoute CRD (kuma.io/v1alpha1, Kuma 2.x
// schema), as installed by Start.
//
//go:embed testdata/meshhttproute-crd.yaml
var MeshHTTPRouteCRD []byte

// trafficRoutePolicy holds Kuma's TrafficRoute checks as a ValidatingAdmissionPolicy.
//
//go:embed testdata/trafficroute-policy.yaml
var trafficRoutePolicy []byte

func meshHTTPRouteCRD() (*apiextensionsv1.CustomResourceDefinition, error) {
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict(MeshHTTPRouteCRD, crd); err != nil {
		return nil, fmt.Errorf("parse MeshHTTPRoute CRD: %w", err)
	}
	return crd, nil
}

func trafficRoutePolicyObjects() (*admissionregistrationv1.ValidatingAdmissionPolicy, *admissionregistrationv1.ValidatingAdmissionPolicyBinding, error) {
	docs, err := splitYAML(trafficRoutePolicy)
	if err != nil || len(docs) != 2 {
		return nil, nil, fmt.Errorf("parse TrafficRoute policy: %d documents, %v", len(docs), err)
	}
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
	if err := yaml.UnmarshalStrict(docs[0], policy); err != nil {
		return nil, nil, fmt.Errorf("parse TrafficRoute policy: %w", err)
	}
	if err := yaml.UnmarshalStrict(docs[1], binding); err != nil {
		return nil, nil, fmt.Errorf("parse TrafficRoute policy binding: %w", err)
	}
	return policy, binding, nil
}

func splitYAML(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(doc)) > 0 {
			docs = append(docs, doc)
		}
	}
}

// installTrafficRoutePolicy creates the TrafficRoute admission policy and waits until
// the apiserver enforces it: policies compile asynchronously, and a test applying a
// malformed route right after Start must see it refused.
func installTrafficRoutePolicy(ctx context.Context, c client.Client) error {
	policy, binding, err := trafficRoutePolicyObjects()
	if err != nil {
		return err
	}
	// A sandbox restarted on its old Dir finds them in etcd already.
	want := policy.Spec
	if _, err := controllerutil.CreateOrUpdate(ctx, c, policy, func() error { policy.Spec = want; return nil }); err != nil {
		return fmt.Errorf("create TrafficRoute policy: %w", err)
	}
	wantBinding := binding.Spec
	if _, err := controllerutil.CreateOrUpdate(ctx, c, binding, func() error { binding.Spec = wantBinding; return nil }); err != nil {
		return fmt.Errorf("create TrafficRoute policy binding: %w", err)
	}
	probe := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kuma.io/v1alpha1",
		"kind":       "TrafficRoute",
		"metadata":   map[string]any{"name": "sandbox-policy-probe"},
		"mesh":       "default",
		"spec":       map[string]any{},
	}}
	return Poll(ctx, 30*time.Second, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		err := c.Create(ctx, probe.DeepCopy(), client.DryRunAll)
		if apierrors.IsInvalid(err) || apierrors.IsForbidden(err) {
			return true, nil
		}
		if err == nil {
			return false, errors.New("a TrafficRoute without sources is still accepted")
		}
		return false, err
	})
}

// waitCRDsEstablished waits until every named CRD is Established; envtest already
// waits for discovery, this also covers CRDs created outside it.
func waitCRDsEstablished(ctx context.Context, c client.Client, names ...string) error {
	for _, name := range names {
		err := Poll(ctx, 30*time.Second, 50*time.Millisecond, func(ctx context.Context) (bool, error) {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := c.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
				return false, err
			}
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return true, nil
				}
			}
			return false, fmt.Errorf("CRD %s not established", name)
		})
		if err != nil {
			return err
		}
	}
	return nil
}
