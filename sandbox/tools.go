package sandbox

import (
	"fmt"
	"strings"
)

// Binaries are the paths of the programs a sandbox runs.
type Binaries struct {
	KubeAPIServer         string
	KubeControllerManager string
	KubeScheduler         string
	Kubectl               string
	Etcd                  string
	Kwok                  string
	Prometheus            string
	// KumaCP is Kuma's control plane, run as the Global and the zone CP of multi-zone
	// scenarios (kumacp.go).
	KumaCP string
	// SourceController, KustomizeController and GitServer are Flux's parts (flux.go).
	// Build leaves them empty: BuildFlux builds them on demand.
	SourceController    string
	KustomizeController string
	GitServer           string
}

// tool is one binary built from a tools module under sandbox/tools.
type tool struct {
	// name is the binary's name.
	name string
	// toolsModule is the directory under sandbox/tools holding the module to build in.
	toolsModule string
	// module is the module whose version names the cache entry.
	module string
	// pkg is the main package.
	pkg string
	// tags are the build tags, if any.
	tags string
	// ldflags returns the linker flags for the module's version.
	ldflags func(version string) string
	// set stores the built path in Binaries.
	set func(b *Binaries, path string)
}

// kubeLDFlags stamps the version into component-base and client-go; without it the
// binaries report v0.0.0-master, which kubectl and discovery clients dislike. The order
// matches the warm-up build documented in the sandbox notes, so nothing differs from it.
func kubeLDFlags(version string) string {
	major, minor := "1", ""
	if parts := strings.SplitN(strings.TrimPrefix(version, "v"), ".", 3); len(parts) >= 2 {
		major, minor = parts[0], parts[1]
	}
	var b strings.Builder
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		fmt.Fprintf(&b, "-X %s.gitVersion=%s -X %s.gitMajor=%s -X %s.gitMinor=%s ", pkg, version, pkg, major, pkg, minor)
	}
	b.WriteString("-s -w")
	return b.String()
}

func stripLDFlags(string) string { return "-s -w" }

// kumaLDFlags stamps the version kuma-cp reports (its /versions, KDS handshakes and
// logs); unstamped it says "unknown".
func kumaLDFlags(version string) string {
	const pkg = "github.com/kumahq/kuma/pkg/version"
	return fmt.Sprintf("-X %s.version=%s -X %s.gitTag=%s -s -w", pkg, strings.TrimPrefix(version, "v"), pkg, version)
}

// tools lists what Build builds, in the order it builds them: cheap ones first so a
// first-time user sees progress early.
var tools = []tool{
	{name: "etcd", toolsModule: "etcd", module: "go.etcd.io/etcd/server/v3", pkg: "go.etcd.io/etcd/server/v3",
		ldflags: stripLDFlags, set: func(b *Binaries, p string) { b.Etcd = p }},
	{name: "kube-apiserver", toolsModule: "kubernetes", module: "k8s.io/kubernetes", pkg: "k8s.io/kubernetes/cmd/kube-apiserver",
		ldflags: kubeLDFlags, set: func(b *Binaries, p string) { b.KubeAPIServer = p }},
	{name: "kubectl", toolsModule: "kubernetes", module: "k8s.io/kubernetes", pkg: "k8s.io/kubernetes/cmd/kubectl",
		ldflags: kubeLDFlags, set: func(b *Binaries, p string) { b.Kubectl = p }},
	{name: "kube-controller-manager", toolsModule: "kubernetes", module: "k8s.io/kubernetes", pkg: "k8s.io/kubernetes/cmd/kube-controller-manager",
		ldflags: kubeLDFlags, set: func(b *Binaries, p string) { b.KubeControllerManager = p }},
	{name: "kube-scheduler", toolsModule: "kubernetes", module: "k8s.io/kubernetes", pkg: "k8s.io/kubernetes/cmd/kube-scheduler",
		ldflags: kubeLDFlags, set: func(b *Binaries, p string) { b.KubeScheduler = p }},
	{name: "kwok", toolsModule: "kwok", module: "sigs.k8s.io/kwok", pkg: "sigs.k8s.io/kwok/cmd/kwok",
		ldflags: stripLDFlags, set: func(b *Binaries, p string) { b.Kwok = p }},
	// remove_all_sd drops every service discovery but file and http: a third of the build.
	{name: "prometheus", toolsModule: "prometheus", module: "github.com/prometheus/prometheus", pkg: "github.com/prometheus/prometheus/cmd/prometheus",
		tags: "remove_all_sd", ldflags: stripLDFlags, set: func(b *Binaries, p string) { b.Prometheus = p }},
	// Last: only the multi-zone scenarios need it (~5 min of CPU cold).
	{name: "kuma-cp", toolsModule: "kuma", module: kumaModule, pkg: "github.com/kumahq/kuma/app/kuma-cp",
		ldflags: kumaLDFlags, set: func(b *Binaries, p string) { b.KumaCP = p }},
}

// fluxTools are optional: only the Flux scenarios need them, and their cold build
// (~20 min of CPU together) would more than double `make sandbox`. BuildFlux builds them.
var fluxTools = []tool{
	{name: "gitserver", toolsModule: "gitserver", module: gitTestServerModule, pkg: ".",
		ldflags: stripLDFlags, set: func(b *Binaries, p string) { b.GitServer = p }},
	{name: "source-controller", toolsModule: "source-controller", module: sourceControllerModule, pkg: sourceControllerModule,
		ldflags: stripLDFlags, set: func(b *Binaries, p string) { b.SourceController = p }},
	{name: "kustomize-controller", toolsModule: "kustomize-controller", module: kustomizeControllerModule, pkg: kustomizeControllerModule,
		ldflags: stripLDFlags, set: func(b *Binaries, p string) { b.KustomizeController = p }},
}
