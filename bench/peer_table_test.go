//go:build linux

package bench

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/coalmine-dev/coalmine/sandbox"
)

// printPeerTable prints both controllers' figures per N and the ratio coalmine/Flagger.
func printPeerTable() {
	if len(peerResults) == 0 {
		return
	}
	var s strings.Builder
	fmt.Fprintf(&s, "\npeer benchmark: N apps (1 replica) with the seed's Canary (interval %s, %d steps of %d%%, both builtin metrics, threshold 5), all shipped at once\n",
		peerInterval, steps, stepWeight)
	rows := [][]string{{"N", "controller", "RSS at rest MiB", "RSS / heap KiB per canary", "CPU ms per canary per interval",
		"GET / LIST+WATCH per canary per interval", "non-event writes per canary per interval", "event writes",
		"Prom queries per canary per interval", "image change to Succeeded p50 / slowest", "slowest / N=1", "failed"}}
	one := map[string]time.Duration{}
	for _, r := range peerResults {
		if r.n == 1 && r.note == "" {
			one[r.controller] = r.rolloutMax
		}
	}
	slowdown := func(r peerResult) float64 {
		if one[r.controller] == 0 {
			return 0
		}
		return float64(r.rolloutMax) / float64(one[r.controller])
	}
	ratio := func(c, f float64) string {
		if f == 0 {
			if c == 0 {
				return "-"
			}
			return "inf"
		}
		return fmt.Sprintf("%.2f", c/f)
	}
	for i := 0; i+1 < len(peerResults); i += 2 {
		f, c := peerResults[i], peerResults[i+1]
		for _, r := range []peerResult{f, c} {
			if r.note != "" {
				rows = append(rows, []string{strconv.Itoa(r.n), r.controller + ": " + r.note})
				continue
			}
			rows = append(rows, []string{
				strconv.Itoa(r.n), r.controller,
				fmt.Sprintf("%.1f", mib(r.restRSS)),
				fmt.Sprintf("%.1f / %.1f", r.rssPerCanary, r.heapPerCanary),
				fmt.Sprintf("%.2f", r.cpuMs),
				fmt.Sprintf("%.2f / %.3f", r.gets, r.listsWatches),
				fmt.Sprintf("%.2f", r.writes),
				fmt.Sprintf("%.2f", r.eventWrites),
				fmt.Sprintf("%.2f", r.prom),
				fmt.Sprintf("%.1fs / %.1fs", r.rolloutP50.Seconds(), r.rolloutMax.Seconds()),
				fmt.Sprintf("%.2fx", slowdown(r)),
				strconv.Itoa(r.failed),
			})
		}
		if f.note != "" || c.note != "" {
			continue
		}
		rows = append(rows, []string{strconv.Itoa(f.n), "coalmine / Flagger",
			ratio(float64(c.restRSS), float64(f.restRSS)),
			ratio(c.rssPerCanary, f.rssPerCanary) + " / " + ratio(c.heapPerCanary, f.heapPerCanary),
			ratio(c.cpuMs, f.cpuMs),
			ratio(c.gets, f.gets) + " / " + ratio(c.listsWatches, f.listsWatches),
			ratio(c.writes, f.writes), ratio(c.eventWrites, f.eventWrites), ratio(c.prom, f.prom),
			ratio(c.rolloutP50.Seconds(), f.rolloutP50.Seconds()) + " / " + ratio(c.rolloutMax.Seconds(), f.rolloutMax.Seconds()),
			ratio(slowdown(c), slowdown(f)), ""})
	}
	writeTable(&s, rows)
	fmt.Fprintf(&s, "\nFlagger: its own process (RSS from /proc/<pid>/status, CPU = utime+stime of /proc/<pid>/stat, heap = go_memstats_heap_inuse_bytes of its /metrics, uncollected);\n")
	fmt.Fprintf(&s, "coalmine: in this process as in make bench (RSS at rest = bin/coalmine in its own process; per canary = growth of this process after runtime.GC and FreeOSMemory;\n")
	fmt.Fprintf(&s, "CPU = the part of a CPU profile on coalmine's goroutines). Requests: counted per controller on its own connection to the apiserver (Flagger: a counting proxy\n")
	fmt.Fprintf(&s, "its kubeconfig points at, which impersonates %s:%s; coalmine: its rest.Config's transport), those about the app namespace (and Flagger's TrafficRoutes),\n", sandbox.FlaggerNamespace, sandbox.FlaggerServiceAccount)
	fmt.Fprintf(&s, "from the image change to all finished, / N / %d steps. Prometheus: a counting proxy per controller. Per interval = per analysis step (%d per rollout).\n", steps, steps)
	for _, r := range peerResults {
		if r.note == "" {
			fmt.Fprintf(&s, "%s N=%d: whole process CPU %.2f ms per canary per interval; per rollout of one canary: %s\n", r.controller, r.n, r.processCPUms, r.writesBy)
		}
	}
	fmt.Print(s.String())
}
