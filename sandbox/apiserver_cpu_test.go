package sandbox

import (
	"testing"
	"time"
)

func TestCPUFromStat(t *testing.T) {
	tests := []struct {
		name string
		line string
		want time.Duration
		ok   bool
	}{
		{"plain name", "4242 (kube-apiserver) S 1 4242 4242 0 -1 4194560 1 0 0 0 7123 345 0 0 20 0 30 0 100 1 2", 74680 * time.Millisecond, true},
		{"name with spaces and parentheses", "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 150 50 0 0 20 0 1 0 1 1 1", 2 * time.Second, true},
		{"truncated", "7 (x) R 1 7", 0, false},
		{"no name", "7 x R", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := cpuFromStat([]byte(tt.line))
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("cpuFromStat = %s, %v; want %s, ok %v", got, err, tt.want, tt.ok)
			}
		})
	}
}
