package sandbox

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"
)

// FluxApply is one server-side apply of a Kustomization as the kustomize-controller logged
// it ("server-side apply completed"): what happened to each object ("created",
// "configured", "unchanged", ...) at which source revision.
type FluxApply struct {
	Time     time.Time
	Revision string
	// Output maps "Kind/namespace/name" to the action.
	Output map[string]string
}

// Applies reads every server-side apply the kustomize-controller logged for the
// Kustomization namespace/name, oldest first. Flux reports drift this way: an object
// whose live state differs from the repository is "configured" again on a reconciliation
// of an unchanged revision.
func (f *Flux) Applies(namespace, name string) ([]FluxApply, error) {
	file, err := os.Open(f.LogPath(FluxKustomizeController))
	if err != nil {
		return nil, fmt.Errorf("read the kustomize-controller's log: %w", err)
	}
	defer file.Close()
	return parseApplies(file, namespace, name)
}

// parseApplies reads the applies of namespace/name from a kustomize-controller's JSON log;
// other lines (the sandbox's own header, other Kustomizations) are skipped.
func parseApplies(r io.Reader, namespace, name string) ([]FluxApply, error) {
	var out []FluxApply
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.Contains(line, []byte("server-side apply completed")) {
			continue
		}
		var entry struct {
			TS        string            `json:"ts"`
			Msg       string            `json:"msg"`
			Name      string            `json:"name"`
			Namespace string            `json:"namespace"`
			Revision  string            `json:"revision"`
			Output    map[string]string `json:"output"`
		}
		if err := json.Unmarshal(line, &entry); err != nil || entry.Msg != "server-side apply completed" {
			continue
		}
		if entry.Name != name || entry.Namespace != namespace {
			continue
		}
		ts, _ := time.Parse(time.RFC3339Nano, entry.TS)
		out = append(out, FluxApply{Time: ts, Revision: entry.Revision, Output: entry.Output})
	}
	return out, sc.Err()
}
