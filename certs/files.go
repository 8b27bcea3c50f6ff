package certs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File names in the cert dir; controller-runtime's webhook server reads these by default.
const (
	FileCert = "tls.crt"
	FileKey  = "tls.key"
)

// writeFiles puts the serving pair into dir. Each file is replaced atomically (write a
// temporary file beside it, then rename), so the webhook server's certwatcher never reads
// half a file. It may briefly see a new key next to the old certificate; certwatcher then
// keeps the previous pair and loads the new one on the next event. The key goes first so
// the last event is the certificate's. It reports whether anything changed.
func writeFiles(dir string, certPEM, keyPEM []byte) (bool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("create cert dir: %w", err)
	}
	keyChanged, err := writeFileAtomic(filepath.Join(dir, FileKey), keyPEM, 0o600)
	if err != nil {
		return false, err
	}
	certChanged, err := writeFileAtomic(filepath.Join(dir, FileCert), certPEM, 0o644)
	if err != nil {
		return false, err
	}
	return keyChanged || certChanged, nil
}

func writeFileAtomic(path string, data []byte, mode fs.FileMode) (bool, error) {
	old, err := os.ReadFile(path)
	if err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	return true, nil
}
