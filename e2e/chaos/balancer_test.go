package chaos

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// balancer is a TCP load balancer in front of the replicas' webhook ports: the stand-in
// for the coalmine-webhook Service with two endpoints. The webhook configurations' URL is
// https://127.0.0.1:<balancer port>; TLS passes through untouched (the replicas serve the
// certificate). A connection goes to a random ready replica (readiness from the fleet's
// /readyz probe), else to any that accepts it. A replica that is killed takes its
// connections with it; the balancer closes the apiserver's side at once so no pooled
// connection outlives its backend, and counts a connection cut with a request in flight
// (bytes sent after the last answer).
type balancer struct {
	f        *fleet
	listener net.Listener
	rng      *rand.Rand
	rngMu    sync.Mutex

	mu    sync.Mutex
	conns map[int]map[*proxied]struct{} // per backend slot
	cuts  []cut
	// forwarded counts connections per slot; refused those no replica took.
	forwarded []atomic.Int64
	refused   atomic.Int64
	closed    bool
}

// cut is a connection that lost its backend to a SIGKILL: with a request in flight, or
// idle (the apiserver may be writing its next request into it as it closes).
type cut struct {
	slot     int
	at       time.Time
	inFlight bool
}

type proxied struct {
	down, up net.Conn
	// lastUp / lastDown: unix nanos of the last bytes from the backend / from the apiserver.
	lastUp, lastDown atomic.Int64
	dropped          atomic.Bool
}

func newBalancer(f *fleet) (*balancer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &balancer{f: f, listener: l, rng: rand.New(rand.NewPCG(1, 2)), conns: map[int]map[*proxied]struct{}{},
		forwarded: make([]atomic.Int64, len(f.slots))}
	go b.serve()
	return b, nil
}

func (b *balancer) port() int { return b.listener.Addr().(*net.TCPAddr).Port }

func (b *balancer) serve() {
	for {
		c, err := b.listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go b.handle(c)
	}
}

// pick orders the slots: ready ones first (shuffled), then the others.
func (b *balancer) pick() []int {
	var ready, rest []int
	for i := range b.f.slots {
		if b.f.isReady(i) {
			ready = append(ready, i)
		} else {
			rest = append(rest, i)
		}
	}
	b.rngMu.Lock()
	b.rng.Shuffle(len(ready), func(i, j int) { ready[i], ready[j] = ready[j], ready[i] })
	b.rngMu.Unlock()
	return append(ready, rest...)
}

func (b *balancer) handle(down net.Conn) {
	var up net.Conn
	slot := -1
	for _, i := range b.pick() {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(b.f.slots[i].webhookPort), time.Second)
		if err == nil {
			up, slot = c, i
			break
		}
	}
	if up == nil {
		b.refused.Add(1)
		down.Close()
		return
	}
	p := &proxied{down: down, up: up}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		up.Close()
		down.Close()
		return
	}
	if b.conns[slot] == nil {
		b.conns[slot] = map[*proxied]struct{}{}
	}
	b.conns[slot][p] = struct{}{}
	b.mu.Unlock()
	b.forwarded[slot].Add(1)

	done := make(chan struct{}, 2)
	go func() { copyStamped(up, down, &p.lastDown); done <- struct{}{} }()
	go func() { copyStamped(down, up, &p.lastUp); done <- struct{}{} }()
	<-done
	// Either side ended: end both, so the apiserver never reuses a connection whose
	// backend is gone.
	down.Close()
	up.Close()
	<-done
	b.mu.Lock()
	delete(b.conns[slot], p)
	if p.dropped.Load() {
		b.cuts = append(b.cuts, cut{slot: slot, at: time.Now(), inFlight: p.lastDown.Load() > p.lastUp.Load()})
	}
	b.mu.Unlock()
}

// copyStamped copies src to dst, stamping the time of every read.
func copyStamped(dst io.Writer, src io.Reader, stamp *atomic.Int64) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			stamp.Store(time.Now().UnixNano())
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// dropBackend closes the connections to slot (its process is being killed), marking
// them so a request in flight is counted as cut.
func (b *balancer) dropBackend(slot int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for p := range b.conns[slot] {
		p.dropped.Store(true)
	}
}

// cutsIn counts connections cut by a SIGKILL around [from, to] (their close may come a
// moment before the call that used them fails, or up to a second after it started).
func (b *balancer) cutsIn(from, to time.Time) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, c := range b.cuts {
		if !c.at.Before(from.Add(-500*time.Millisecond)) && !c.at.After(to.Add(time.Second)) {
			n++
		}
	}
	return n
}

func (b *balancer) close() {
	b.mu.Lock()
	b.closed = true
	for _, m := range b.conns {
		for p := range m {
			p.down.Close()
			p.up.Close()
		}
	}
	b.mu.Unlock()
	b.listener.Close()
}
