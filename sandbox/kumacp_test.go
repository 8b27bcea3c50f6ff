package sandbox

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The fallback to the emulation must say why kuma-cp does not run.
func TestKumaCPUnavailableSaysWhy(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "kuma-cp")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	type test struct {
		name string
		bins *Binaries
		want string // in the reason; "" for no reason (kuma-cp runs)
	}
	tests := []test{
		{name: "no binaries", bins: nil, want: "no kuma-cp"},
		{name: "no kuma-cp", bins: &Binaries{}, want: "no kuma-cp"},
		{name: "binary absent", bins: &Binaries{KumaCP: bin + "-absent"}, want: "absent"},
	}
	switch {
	case runtime.GOOS != "linux":
		tests = append(tests, test{name: "not Linux", bins: &Binaries{KumaCP: bin}, want: "not Linux"})
	case os.Geteuid() != 0:
		tests = append(tests, test{name: "not root", bins: &Binaries{KumaCP: bin}, want: "needs root"})
	default:
		tests = append(tests, test{name: "root with the binary", bins: &Binaries{KumaCP: bin}, want: ""})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := kumaCPUnavailable(tt.bins)
			if tt.want == "" && got != "" || tt.want != "" && !strings.Contains(got, tt.want) {
				t.Errorf("kumaCPUnavailable = %q, want a reason containing %q", got, tt.want)
			}
		})
	}
}
