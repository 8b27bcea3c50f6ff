package sandbox

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

func TestParseRequiredVersion(t *testing.T) {
	gomod := `module example.com/tools

go 1.26.0

require k8s.io/kubernetes v1.37.2

require (
	github.com/beorn7/perks v1.0.1 // indirect
	sigs.k8s.io/kwok v0.8.0
)

replace k8s.io/api => k8s.io/api v0.37.2
`
	tests := []struct {
		name, module, want string
	}{
		{name: "single-line require", module: "k8s.io/kubernetes", want: "v1.37.2"},
		{name: "require block", module: "sigs.k8s.io/kwok", want: "v0.8.0"},
		{name: "indirect requirement", module: "github.com/beorn7/perks", want: "v1.0.1"},
		{name: "replace is not a requirement", module: "k8s.io/api", want: ""},
		{name: "absent module", module: "example.com/absent", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseRequiredVersion([]byte(gomod), tt.module); got != tt.want {
				t.Errorf("parseRequiredVersion(%s) = %q, want %q", tt.module, got, tt.want)
			}
		})
	}
}

func TestToolsModulesPinEveryTool(t *testing.T) {
	dir, err := ToolsDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, tl := range tools {
		v, err := requiredVersion(filepath.Join(dir, tl.toolsModule, "go.mod"), tl.module)
		if err != nil || !strings.HasPrefix(v, "v") {
			t.Errorf("%s: version %q, %v", tl.name, v, err)
		}
	}
}

func TestBuildGroupsCompileTheKubernetesBinariesTogether(t *testing.T) {
	var got [][]string
	for _, g := range buildGroups(tools) {
		var names []string
		for _, tl := range g {
			names = append(names, tl.name)
		}
		got = append(got, names)
	}
	want := [][]string{{"etcd"}, {"kube-apiserver", "kubectl", "kube-controller-manager", "kube-scheduler"}, {"kwok"}, {"prometheus"}, {"kuma-cp"}}
	if len(got) != len(want) {
		t.Fatalf("groups = %v, want %v", got, want)
	}
	for i := range want {
		if strings.Join(got[i], ",") != strings.Join(want[i], ",") {
			t.Errorf("group %d = %v, want %v", i, got[i], want[i])
		}
		for _, tl := range buildGroups(tools)[i] {
			// buildTogether installs go build's output, named after the package.
			if filepath.Base(tl.pkg) != tl.name && len(got[i]) > 1 {
				t.Errorf("%s is built as %s", tl.name, filepath.Base(tl.pkg))
			}
		}
	}
}

func TestKubeLDFlagsMatchTheWarmUpBuild(t *testing.T) {
	// The same flags as the documented manual build, so its Go build cache is reused.
	want := "-X k8s.io/component-base/version.gitVersion=v1.37.2 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 " +
		"-X k8s.io/client-go/pkg/version.gitVersion=v1.37.2 -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=37 -s -w"
	if got := kubeLDFlags("v1.37.2"); got != want {
		t.Errorf("kubeLDFlags =\n%s\nwant\n%s", got, want)
	}
}

func TestCacheDirHonoursXDG(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", "/xdg")
	if got, _ := CacheDir(); got != "/xdg/coalmine/sandbox" {
		t.Errorf("CacheDir = %s", got)
	}
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "/home/u")
	if got, _ := CacheDir(); got != "/home/u/.cache/coalmine/sandbox" {
		t.Errorf("CacheDir = %s", got)
	}
}

// The real Prometheus loads this config in the e2e smoke test; here its shape is checked.
func TestPrometheusConfig(t *testing.T) {
	tests := []struct {
		name    string
		targets map[string][]string
		jobs    []string
	}{
		{name: "no targets", targets: map[string][]string{}},
		{name: "jobs sorted by name", targets: map[string][]string{"sim": {"127.0.0.1:1", "127.0.0.1:2"}, "coalmine": {"127.0.0.1:3"}}, jobs: []string{"coalmine", "sim"}},
		{name: "emptied job is left out", targets: map[string][]string{"gone": nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := renderPrometheusConfig(tt.targets)
			if err != nil {
				t.Fatal(err)
			}
			var cfg prometheusConfig
			if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
				t.Fatalf("%v\n%s", err, data)
			}
			if cfg.Global.ScrapeInterval != "1s" || cfg.Global.EvaluationInterval != "1s" || cfg.Global.ScrapeTimeout != "1s" {
				t.Errorf("global = %+v, want 1s everywhere", cfg.Global)
			}
			var jobs []string
			for _, sc := range cfg.ScrapeConfigs {
				jobs = append(jobs, sc.JobName)
				if got, want := sc.StaticConfigs[0].Targets, tt.targets[sc.JobName]; strings.Join(got, ",") != strings.Join(want, ",") {
					t.Errorf("job %s targets %v, want %v", sc.JobName, got, want)
				}
			}
			if strings.Join(jobs, ",") != strings.Join(tt.jobs, ",") {
				t.Errorf("jobs %v, want %v", jobs, tt.jobs)
			}
		})
	}
}

func TestEmbeddedManifestsParse(t *testing.T) {
	crd, err := meshHTTPRouteCRD()
	if err != nil {
		t.Fatal(err)
	}
	if crd.Name != "meshhttproutes.kuma.io" || crd.Spec.Scope != "Namespaced" || crd.Spec.Versions[0].Name != "v1alpha1" {
		t.Errorf("MeshHTTPRoute CRD = %s %s %s", crd.Name, crd.Spec.Scope, crd.Spec.Versions[0].Name)
	}
	policy, binding, err := trafficRoutePolicyObjects()
	if err != nil {
		t.Fatal(err)
	}
	if binding.Spec.PolicyName != policy.Name {
		t.Errorf("binding names policy %q, want %q", binding.Spec.PolicyName, policy.Name)
	}
}

func TestSchedulableOnFakeNodeIsIdempotent(t *testing.T) {
	spec := &corev1.PodSpec{NodeSelector: map[string]string{"zone": "a"}}
	SchedulableOnFakeNode(spec)
	SchedulableOnFakeNode(spec)
	if len(spec.Tolerations) != 1 || spec.Tolerations[0] != FakeNodeToleration {
		t.Errorf("tolerations = %v", spec.Tolerations)
	}
	if spec.NodeSelector["zone"] != "a" || spec.NodeSelector["type"] != "kwok" {
		t.Errorf("node selector = %v", spec.NodeSelector)
	}
}

func TestRepoRootFromASubdirectory(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "sandbox", "tools")); err != nil {
		t.Errorf("RepoRoot = %s: %v", root, err)
	}
}
