// Package kumajudge checks TrafficRoutes the way Kuma's control plane does.
//
// Coalmine's product module carries its own small TrafficRoute types and never imports
// Kuma (DESIGN §7). This test-only module imports Kuma v1.8.1 so that its own validator
// judges what coalmine writes: an object that passes here is one a real Kuma control
// plane accepts.
package kumajudge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/golang/protobuf/jsonpb"

	mesh_proto "github.com/kumahq/kuma/api/mesh/v1alpha1"
	core_mesh "github.com/kumahq/kuma/pkg/core/resources/apis/mesh"
	core_model "github.com/kumahq/kuma/pkg/core/resources/model"
	util_proto "github.com/kumahq/kuma/pkg/util/proto"
)

// Route is a TrafficRoute as it is stored in Kubernetes (kuma.io/v1alpha1, cluster-scoped,
// mesh beside spec). Spec stays raw: Kuma decodes it itself.
type Route struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Mesh       string `json:"mesh"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace,omitempty"`
	} `json:"metadata"`
	Spec json.RawMessage `json:"spec"`
}

// Verdict is the judgement of one route; Errors is empty when Kuma accepts it.
type Verdict struct {
	Name   string
	Errors []string
}

// OK reports whether Kuma accepts the route.
func (v Verdict) OK() bool { return len(v.Errors) == 0 }

// String is the CLI line: "ok <name>" or "invalid <name>: <errors>".
func (v Verdict) String() string {
	if v.OK() {
		return "ok " + v.Name
	}
	return fmt.Sprintf("invalid %s: %s", v.Name, strings.Join(v.Errors, "; "))
}

// Judge applies, in order, what Kuma's Kubernetes admission does to a TrafficRoute:
// the mesh check of its owner-reference mutator (ValidateMesh), the decoding of spec
// (util_proto.FromJSON, which ignores unknown fields) and TrafficRouteResource.Validate.
// On top of Kuma, it refuses fields Kuma would silently drop (a typo such as "weigth"
// would otherwise pass with weight 0), a wrong apiVersion/kind, and a namespace on this
// cluster-scoped kind.
func Judge(r Route) Verdict {
	v := Verdict{Name: r.Metadata.Name}
	if v.Name == "" {
		v.Name = "<unnamed>"
		v.Errors = append(v.Errors, "metadata.name: cannot be empty")
	}
	if r.APIVersion != "kuma.io/v1alpha1" || r.Kind != "TrafficRoute" {
		v.Errors = append(v.Errors, fmt.Sprintf("apiVersion/kind: want kuma.io/v1alpha1 TrafficRoute, got %q %q", r.APIVersion, r.Kind))
	}
	if r.Metadata.Namespace != "" {
		v.Errors = append(v.Errors, fmt.Sprintf("metadata.namespace: must be empty for the cluster-scoped TrafficRoute, got %q", r.Metadata.Namespace))
	}
	if err := core_mesh.ValidateMesh(r.Mesh, core_model.ScopeMesh); err.HasViolations() {
		v.Errors = append(v.Errors, err.Error())
	}

	spec := &mesh_proto.TrafficRoute{}
	if len(bytes.TrimSpace(r.Spec)) > 0 && string(bytes.TrimSpace(r.Spec)) != "null" {
		if err := util_proto.FromJSON(r.Spec, spec); err != nil {
			v.Errors = append(v.Errors, fmt.Sprintf("spec: Kuma cannot decode it: %v", err))
			return v
		}
		strict := jsonpb.Unmarshaler{AllowUnknownFields: false}
		if err := strict.Unmarshal(bytes.NewReader(r.Spec), &mesh_proto.TrafficRoute{}); err != nil {
			v.Errors = append(v.Errors, fmt.Sprintf("spec: Kuma would ignore part of it: %v", err))
		}
	}
	res := core_mesh.NewTrafficRouteResource()
	if err := res.SetSpec(spec); err != nil {
		v.Errors = append(v.Errors, err.Error())
		return v
	}
	if err := res.Validate(); err != nil {
		v.Errors = append(v.Errors, err.Error())
	}
	return v
}

// Parse reads routes from JSON: one object, an array of objects, or a Kubernetes List
// (what `kubectl get trafficroutes -o json` prints).
func Parse(data []byte) ([]Route, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, nil
	}
	if data[0] == '[' {
		var routes []Route
		if err := json.Unmarshal(data, &routes); err != nil {
			return nil, fmt.Errorf("decode route array: %w", err)
		}
		return routes, nil
	}
	var probe struct {
		Items *[]Route `json:"items"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("decode route: %w", err)
	}
	if probe.Items != nil {
		return *probe.Items, nil
	}
	var r Route
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("decode route: %w", err)
	}
	return []Route{r}, nil
}

// Load reads routes from a file, or from every *.json file of a directory in name order.
func Load(path string) ([]Route, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	files := []string{path}
	if info.IsDir() {
		files, err = filepath.Glob(filepath.Join(path, "*.json"))
		if err != nil {
			return nil, err
		}
		sort.Strings(files)
	}
	var all []Route
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		routes, err := Parse(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		all = append(all, routes...)
	}
	return all, nil
}
