//go:build !linux

package sandbox

import (
	"errors"
	"os/exec"
)

// kumaCPPlatformUnavailable: kuma-cp v1.8.1 reads the in-cluster namespace file from a fixed
// path, which the sandbox provides in a private mount namespace, a Linux feature.
func kumaCPPlatformUnavailable() string {
	return "kuma-cp's in-cluster namespace file is provided in a Linux mount namespace, and this is not Linux"
}

func kumaCPCommand(bin, _ string, args ...string) *exec.Cmd { return exec.Command(bin, args...) }

func readRSS(int) (int64, error) { return 0, errors.New("RSS: needs /proc") }
