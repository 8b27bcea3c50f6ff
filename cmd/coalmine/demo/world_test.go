package demo

import (
	"strings"
	"testing"

	"github.com/coalmine-dev/coalmine/sandbox"
)

// TestDescribeParts: the demo's "what runs" list names each real part with the version
// its tools module builds, says kuma-cp is not running when the Global CP is emulated,
// and names Flux's controllers only when they run.
func TestDescribeParts(t *testing.T) {
	kumaVersion, err := sandbox.ToolVersion("kuma-cp")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		w          *world
		want, lack []string
	}{
		{"real kuma, no flux", &world{kuma: &sandbox.KumaMultiZone{Real: true, ZoneName: "zone-1"}},
			[]string{"kube-apiserver v", "etcd v", "kube-controller-manager v", "kwok v", "prometheus v",
				"kuma-cp " + kumaVersion + ": Global CP and zone CP zone-1", "Flux: not run", "ARGS=--flux", "emulated: the Envoy data planes"},
			[]string{"NOT RUNNING", "source-controller"}},
		{"emulated kuma, flux", &world{kuma: &sandbox.KumaMultiZone{Why: "not root"}, flux: &sandbox.Flux{}},
			[]string{"kuma-cp: NOT RUNNING, emulated", "source-controller v", "kustomize-controller v", "gitserver v", "Git commits"},
			[]string{"Global CP and zone CP", "Flux: not run"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := strings.Join(tt.w.describeParts(), "\n")
			for _, s := range tt.want {
				if !strings.Contains(text, s) {
					t.Errorf("parts lack %q:\n%s", s, text)
				}
			}
			for _, s := range tt.lack {
				if strings.Contains(text, s) {
					t.Errorf("parts say %q:\n%s", s, text)
				}
			}
		})
	}
}

func TestFreePortsAreDistinct(t *testing.T) {
	ports, err := FreePorts(64)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] {
			t.Fatalf("port %d picked twice in %v", p, ports)
		}
		seen[p] = true
	}
}
