package sandbox

import (
	"path/filepath"
	"testing"
)

func TestTmpfsBaseIsTheDeepestExistingAncestor(t *testing.T) {
	dir := t.TempDir()
	if got := tmpfsBase(dir); got != "" {
		t.Errorf("tmpfsBase(existing %s) = %q, want \"\"", dir, got)
	}
	if got := tmpfsBase(filepath.Join(dir, "a", "b")); got != dir {
		t.Errorf("tmpfsBase(%s/a/b) = %q, want %s", dir, got, dir)
	}
}
