// Command heaproom reads heap dumps written by runtime/debug.WriteHeapDump (the bench
// writes them with COALMINE_BENCH_HEAPDUMP set) and tells, by size class, how much of
// HeapInuse is objects and how much is the free room of the spans they sit in. With two
// dumps it prints the growth from the first to the second.
//
//	go run ./bench/heaproom [-base heapdump-before-apps-n50] heapdump-initialized-n50
//
// A dump lists the objects of each in-use span together, in address order, without the
// span's bounds; spans are told apart by the span size of the object's class, read from
// the size class table of the Go toolchain that runs this command.
package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
)

const pageSize = 8192

// classUse is what one size class holds: spans, the bytes they cover, and live objects.
type classUse struct {
	spans, spanBytes, objects, objectBytes int64
}

func (c classUse) room() int64 { return c.spanBytes - c.objectBytes }

func main() {
	base := flag.String("base", "", "an earlier dump to subtract")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: heaproom [-base dump] dump")
		os.Exit(2)
	}
	spanBytes, err := readSpanSizes()
	if err != nil {
		fail(err)
	}
	after, err := readDump(flag.Arg(0), spanBytes)
	if err != nil {
		fail(err)
	}
	before := map[int64]classUse{}
	if *base != "" {
		if before, err = readDump(*base, spanBytes); err != nil {
			fail(err)
		}
	}
	report(before, after)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "heaproom:", err)
	os.Exit(1)
}

// report writes one line per size class whose span bytes changed, largest room growth
// first, and the totals.
func report(before, after map[int64]classUse) {
	sizes := map[int64]bool{}
	for s := range before {
		sizes[s] = true
	}
	for s := range after {
		sizes[s] = true
	}
	type row struct {
		size int64
		d    classUse
	}
	var rows []row
	var total classUse
	for s := range sizes {
		a, b := after[s], before[s]
		d := classUse{a.spans - b.spans, a.spanBytes - b.spanBytes, a.objects - b.objects, a.objectBytes - b.objectBytes}
		total = classUse{total.spans + d.spans, total.spanBytes + d.spanBytes, total.objects + d.objects, total.objectBytes + d.objectBytes}
		if d.spanBytes != 0 || d.objectBytes != 0 {
			rows = append(rows, row{s, d})
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].d.room() > rows[j].d.room() })
	fmt.Printf("%8s %8s %10s %10s %10s %10s\n", "size", "spans", "span KiB", "objects", "live KiB", "room KiB")
	line := func(name string, d classUse) {
		fmt.Printf("%8s %8d %10.1f %10d %10.1f %10.1f\n", name, d.spans, kib(d.spanBytes), d.objects, kib(d.objectBytes), kib(d.room()))
	}
	for _, r := range rows {
		name := strconv.FormatInt(r.size, 10)
		if r.size < 0 {
			name = "large"
		}
		line(name, r.d)
	}
	line("total", total)
}

func kib(b int64) float64 { return float64(b) / 1024 }

// readSpanSizes reads bytes/obj and bytes/span from the toolchain's size class table.
func readSpanSizes() (map[int64]int64, error) {
	path := filepath.Join(runtime.GOROOT(), "src", "internal", "runtime", "gc", "sizeclasses.go")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the size class table: %w", err)
	}
	out := map[int64]int64{}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(strings.TrimPrefix(l, "//"))
		if !strings.HasPrefix(l, "//") || len(f) < 3 {
			continue
		}
		size, err1 := strconv.ParseInt(f[1], 10, 64)
		span, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 == nil && err2 == nil {
			out[size] = span
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no size classes in %s", path)
	}
	return out, nil
}

// Record tags of the heap dump format (runtime/heapdump.go).
const (
	tagObject = 1
	tagType   = 3
	tagParams = 6
	tagItab   = 8
)

// readDump sums the objects of a heap dump by size class (large objects under -1). It
// reads up to the first record after the objects; the rest (goroutines, roots) is not
// needed.
func readDump(path string, spanBytes map[int64]int64) (map[int64]classUse, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open dump: %w", err)
	}
	defer f.Close()
	r := &reader{r: bufio.NewReaderSize(f, 1<<20)}
	hdr := make([]byte, len("go1.7 heap dump\n"))
	if _, err := io.ReadFull(r.r, hdr); err != nil || string(hdr) != "go1.7 heap dump\n" {
		return nil, fmt.Errorf("read %s: not a heap dump", path)
	}
	out := map[int64]classUse{}
	var spanStart, spanSize, spanEnd, prev int64
	for {
		tag := r.int()
		switch tag {
		case tagParams:
			r.int() // big-endian
			r.int() // pointer size
			r.int() // arena start
			r.int() // arena end
			r.skipString()
			r.skipString()
			r.int() // CPUs
		case tagType:
			r.int()
			r.int()
			r.skipString()
			r.int()
		case tagItab:
			r.int()
			r.int()
		case tagObject:
			addr := int64(r.int())
			size := r.skipString()
			for r.int() != 0 { // pointer fields, then 0
				r.int()
			}
			class := size
			span, small := spanBytes[size]
			if !small {
				class, span = -1, size
			}
			c := out[class]
			c.objects++
			c.objectBytes += size
			// A new span begins where the run of one span's objects cannot go on.
			if !small || size != spanSize || addr <= prev || addr >= spanEnd || (addr-spanStart)%size != 0 {
				spanStart = startOf(addr, size)
				spanSize, spanEnd = size, spanStart+span
				c.spans++
				c.spanBytes += span
			}
			prev = addr
			out[class] = c
		default:
			if r.err != nil {
				return nil, fmt.Errorf("read %s: %w", path, r.err)
			}
			return out, nil
		}
		if r.err != nil {
			return nil, fmt.Errorf("read %s: %w", path, r.err)
		}
	}
}

// startOf guesses the base of the span holding the object at addr: the nearest page
// boundary at or below addr that is a whole number of objects away.
func startOf(addr, size int64) int64 {
	for b := addr; b > addr-64*pageSize; b -= size {
		if b%pageSize == 0 {
			return b
		}
	}
	return addr - addr%pageSize
}

type reader struct {
	r   *bufio.Reader
	err error
}

func (r *reader) int() uint64 {
	if r.err != nil {
		return 0
	}
	v, err := binary.ReadUvarint(r.r)
	if err != nil {
		r.err = errors.Join(errors.New("truncated dump"), err)
	}
	return v
}

// skipString skips a length-prefixed byte run and returns its length.
func (r *reader) skipString() int64 {
	n := int64(r.int())
	if r.err == nil {
		if _, err := r.r.Discard(int(n)); err != nil {
			r.err = fmt.Errorf("truncated dump: %w", err)
		}
	}
	return n
}
