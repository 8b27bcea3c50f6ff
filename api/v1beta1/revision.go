package v1beta1

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	corev1 "k8s.io/api/core/v1"
)

// TemplateRevision is a stable hash of a pod template: equal templates give equal
// revisions, across processes and restarts. encoding/json sorts map keys, so the
// serialisation is canonical for a given API version of the type.
func TemplateRevision(t *corev1.PodTemplateSpec) string {
	b, err := json.Marshal(t)
	if err != nil {
		// A PodTemplateSpec always marshals; a panic here is a programming error.
		panic("marshal pod template: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:10]
}
