# coalmine — the front door. `make demo` and `make test` are the two commands a new user needs.
SHELL := /usr/bin/env bash
GO ?= go
CONTROLLER_GEN := $(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0
# e2e scenarios build on a shared sandbox; the bound is generous for a 2-core machine.
TEST_TIMEOUT ?= 45m
ARGS ?=
# helm renders the chart in tests; built once from its tools module, cached with the sandbox.
HELM ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/coalmine/sandbox/helm-v3.22.0/helm

.PHONY: all build test unit e2e demo manifests verify-manifests sandbox helm chromium bench bench-peer chaos lint help

all: build

help:
	@echo "make demo       the seed story on real kube-apiserver, Prometheus, kuma-cp Global + zone (first run builds them: ~25 min; warm under 2 min)"
	@echo "                ARGS=--flux ships the releases as Git commits through Flux's real controllers (first use builds them: ~6 min more)"
	@echo "make test       lint, generated-file check, unit tests and e2e scenarios on the sandbox"
	@echo "make build      build bin/coalmine and the kubectl plugin bin/kubectl-coalmine"
	@echo "make manifests  regenerate deepcopy, CRDs and RBAC from the API markers"
	@echo "make sandbox    build (or reuse) the sandbox binaries"
	@echo "make bench      run the benchmarks (they report, never fail on timing)"
	@echo "make bench-peer Flagger v1.36.1 and coalmine side by side on the same apps (builds Flagger once: ~3.5 min)"
	@echo "make chaos      the full chaos run: coalmine SIGKILLed, outages, an observer judging I1-I5 (CHAOS_SEED=n replays)"
	@echo "make chromium   install Debian's chromium with apt if missing (the web view's browser test)"
	@echo "make lint       gofmt + go vet"

# The product binary leaves `coalmine demo` out: the demo links the sandbox (envtest,
# kwok, build tooling). `make demo` builds with -tags demo.
# bin/kubectl-coalmine is the kubectl plugin (`kubectl coalmine status|promote|...`): the
# operator commands of `coalmine status|promote|...` without the controller. Put it on PATH.
build:
	$(GO) build -o bin/coalmine ./cmd/coalmine
	$(GO) build -o bin/kubectl-coalmine ./cmd/kubectl-coalmine

manifests:
	$(CONTROLLER_GEN) object paths=./api/...
	$(CONTROLLER_GEN) crd:allowDangerousTypes=true paths=./api/... output:crd:artifacts:config=manifests/crd
	$(CONTROLLER_GEN) rbac:roleName=coalmine paths=./rollout/... paths=./certs/... output:rbac:artifacts:config=manifests/rbac
	$(GO) test ./manifests -run TestChartCopies -update-chart

# Regenerates into the tree and fails if anything changed: generated files are committed.
verify-manifests: manifests
	@if [ -n "$$(git status --porcelain -- api manifests)" ]; then \
		echo "generated files are stale; run 'make manifests' and commit:"; \
		git status --porcelain -- api manifests; git --no-pager diff --stat -- api manifests; exit 1; \
	fi

sandbox:
	$(GO) run ./sandbox/cmd/sandbox build

helm: $(HELM)
$(HELM):
	@echo "building helm v3.22.0 (once; cached at $(HELM))"
	cd sandbox/tools/helm && $(GO) build -o $(HELM) helm.sh/helm/v3/cmd/helm

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags demo ./cmd/coalmine

unit:
	$(GO) test -short ./...

# The web view's e2e test (TestWebViewInChromium) drives a headless Chromium over the
# DevTools protocol: Debian's chromium, installed once with apt when missing
# (COALMINE_CHROMIUM names another binary).
chromium:
	@if [ -n "$$COALMINE_CHROMIUM" ] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then exit 0; fi; \
	echo "installing chromium with apt-get (once; the web view's browser test needs it)"; \
	if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends chromium

e2e: sandbox chromium
	$(GO) test -timeout $(TEST_TIMEOUT) -count=1 -parallel 8 -v ./e2e/...

test: lint verify-manifests sandbox helm chromium
	COALMINE_HELM=$(HELM) $(GO) test -count=1 -parallel 8 -timeout $(TEST_TIMEOUT) ./...
	cd e2e/kumajudge && $(GO) test -count=1 ./...

demo:
	$(GO) run -tags demo ./cmd/coalmine demo $(ARGS)

# The loop's benchmark runs each N of BENCH_SIZES in a process and sandbox of its own,
# after N=1 (the reference of its slowdown columns). Run one after the other in one
# process, N=200's heap growth reused the room N=50's deleted apps had left, so its figure
# said as much about N=50 as about N=200 (NOTES, "Heap per canary"). BENCH_SIZES="50 200
# 1000" adds the thousand; COALMINE_BENCH_SIZES=1,50 runs those N in one process.
BENCH_SIZES ?= 50 200
bench: sandbox
	$(GO) test -run '^$$' -bench . -benchtime 2000x ./webhook/
	$(GO) test -run '^$$' -bench '^BenchmarkApplyOverhead$$' -benchtime 1x -timeout 60m ./bench/
ifdef COALMINE_BENCH_SIZES
	$(GO) test -run '^$$' -bench '^BenchmarkConcurrentCanaries$$' -benchtime 1x -timeout 120m ./bench/
else
	for n in $(BENCH_SIZES); do \
		COALMINE_BENCH_SIZES=1,$$n $(GO) test -run '^$$' -bench '^BenchmarkConcurrentCanaries$$' -benchtime 1x -timeout 120m ./bench/ || exit 1; \
	done
endif

# Flagger and coalmine on the same sandbox, apps and Canary, one after the other per N
# (COALMINE_BENCH_SIZES=1,50 picks the N; default 1,50,200). Flagger is built on demand
# from sandbox/tools/flagger and cached with the sandbox. Reports only.
bench-peer: sandbox
	COALMINE_BENCH_PEER=1 $(GO) test -run '^$$' -bench '^BenchmarkPeer$$' -benchtime 1x -timeout 120m ./bench/

# The test binary runs directly so its progress streams and its summary line
# (chaos: rollouts=N kills=K outages=O violations=V) is the last thing printed.
chaos: sandbox
	$(GO) test -c -o bin/chaos.test ./e2e/chaos
	COALMINE_CHAOS_FULL=1 ./bin/chaos.test -test.run '^TestChaos$$' -test.count=1 -test.timeout 60m
