// Package bench holds coalmine's end-to-end benchmarks on the sandbox: the progression loop
// with N concurrent canaries (CPU, memory, apiserver requests and Prometheus queries per
// canary, and how much slower N rollouts at once finish than one), and the overhead the
// Deployment webhook adds to a server-side apply through the apiserver.
//
// `make bench` runs them with -benchtime 1x, BenchmarkConcurrentCanaries once per N of
// BENCH_SIZES in a process of its own (COALMINE_BENCH_SIZES=1,N): the heap one N leaves
// behind would otherwise change the next N's per-canary figures. They report figures and
// the targets to compare them with; they never fail on a timing (a wait that runs out of
// time skips the rest of that sub-benchmark, says so in the table and keeps the sandbox's
// logs). Environment:
//
//	COALMINE_BENCH_MAX          largest N of BenchmarkConcurrentCanaries run directly
//	                            (default 200; 1000 adds N=1000)
//	COALMINE_BENCH_SIZES        the N to run, comma-separated (say 1,1000), instead
//	COALMINE_BENCH_APPLIES      applies of each kind per op of BenchmarkApplyOverhead (default 200)
//	COALMINE_BENCH_PROFILE_DIR  write the CPU profile of each rollout and the heap profiles
//	                            before the apps, after initialization and after the
//	                            rollouts there, for go tool pprof (one heap sample per 16 KiB)
//	COALMINE_BENCH_MEMPROFILERATE  with a profile dir, one heap sample per this many bytes
//	                            instead (1: every allocation, exact but slow; try N=100)
//	COALMINE_BENCH_HEAPDUMP     with a profile dir, also a runtime heap dump before the apps
//	                            and after initialization: go run ./bench/heaproom tells the
//	                            spans' free room (HeapInuse - HeapAlloc) by size class
//	COALMINE_BENCH_PEER         run BenchmarkPeer (make bench-peer sets it): Flagger v1.36.1
//	                            and coalmine on the same N apps and Canary, side by side;
//	                            its N come from COALMINE_BENCH_SIZES (default 1,50,200)
//
// The process running the benchmarks hosts coalmine (in-process, under its ServiceAccount)
// and the benchmark's driver; the mesh traffic simulator runs in a child process so its
// memory and CPU are not counted as coalmine's. The sandbox kube-apiserver's CPU over each
// rollout is reported apart (apiserver-cpu-ms/canary/interval, read from /proc): the cost
// of coalmine's requests to the cluster, which coalmine's own CPU does not show.
package bench
