package router

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// The two route kinds, spelt as the Canary's coalmine.dev/route-kind annotation spells them.
const (
	KindTrafficRoute  = "TrafficRoute"
	KindMeshHTTPRoute = "MeshHTTPRoute"
)

// Name limits: a DNS-1123 subdomain for any object name, and a DNS-1123 label for the
// MeshHTTPRoute's, because Kuma copies a zone policy's name into the kuma.io/display-name
// label of its Global copy, and a label value holds 63 characters.
const (
	maxObjectName = 253
	maxLabelValue = 63
)

// meshHTTPRouteSuffix sets coalmine's MeshHTTPRoute apart from a user's route named after
// the apex, the name anyone writing one by hand would pick.
const meshHTTPRouteSuffix = "-coalmine"

// RouteName is the name of t's route of the given kind, "" for a kind coalmine does not
// write. It depends only on the Target, so a rename of the apex gives a new name and the
// old one can still be told from status.
func RouteName(kind string, t Target) string {
	switch kind {
	case KindTrafficRoute:
		return TrafficRouteName(t.Apex, t.Namespace)
	case KindMeshHTTPRoute:
		return MeshHTTPRouteName(t.Apex)
	}
	return ""
}

// TrafficRouteName is the name of a Target's TrafficRoute: "<apex>.<namespace>". The kind
// is cluster-scoped, and neither part can hold a dot, so two namespaces with the same app
// never collide (Flagger uses the apex alone, and they do).
func TrafficRouteName(apex, namespace string) string {
	return fitName(apex+"."+namespace, "", maxObjectName)
}

// MeshHTTPRouteName is the name of a Target's MeshHTTPRoute: "<apex>-coalmine", in the
// app namespace. Not the apex alone: that is the name a user's own route would have.
func MeshHTTPRouteName(apex string) string {
	return fitName(apex, meshHTTPRouteSuffix, maxLabelValue)
}

// fitName is base+suffix, or when that is longer than max, base cut short and a hash of
// the whole base put before the suffix: still deterministic, and two long bases that
// share a prefix still differ. The cut drops trailing '-' and '.' so the name stays
// DNS-1123.
func fitName(base, suffix string, max int) string {
	if len(base)+len(suffix) <= max {
		return base + suffix
	}
	sum := sha256.Sum256([]byte(base))
	hash := hex.EncodeToString(sum[:4])
	keep := max - len(suffix) - len(hash) - 1
	return strings.TrimRight(base[:keep], "-.") + "-" + hash + suffix
}
