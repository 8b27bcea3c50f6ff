package sandbox

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"time"
)

// remoteWriteLink is the network between a zone Prometheus and the main one: a proxy the
// zone remote-writes through. Cut plays a partition while both servers keep running:
// every request's connection is closed unanswered, which Prometheus retries with backoff
// as it would a real one, keeping the samples queued. Restore lets them through again.
type remoteWriteLink struct {
	listener net.Listener
	srv      *http.Server
	proxy    *httputil.ReverseProxy
	cut      atomic.Bool
	// forwarded and dropped count write requests, for logs and tests.
	forwarded, dropped atomic.Int64
}

// newRemoteWriteLink starts a link to the Prometheus at mainURL (its base URL).
func newRemoteWriteLink(mainURL string) (*remoteWriteLink, error) {
	target, err := url.Parse(mainURL)
	if err != nil {
		return nil, fmt.Errorf("parse main Prometheus URL: %w", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for the remote-write link: %w", err)
	}
	link := &remoteWriteLink{listener: l, proxy: httputil.NewSingleHostReverseProxy(target)}
	// Main being down is an outage scenario, not news: the zone logs its retries.
	link.proxy.ErrorLog = log.New(io.Discard, "", 0)
	link.srv = &http.Server{Handler: link, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = link.srv.Serve(l) }()
	return link, nil
}

// writeURL is the remote_write URL a zone is configured with.
func (l *remoteWriteLink) writeURL() string {
	return "http://" + l.listener.Addr().String() + "/api/v1/write"
}

func (l *remoteWriteLink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !l.cut.Load() {
		l.forwarded.Add(1)
		l.proxy.ServeHTTP(w, r)
		return
	}
	l.dropped.Add(1)
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "link cut", http.StatusServiceUnavailable)
		return
	}
	if conn, _, err := hj.Hijack(); err == nil {
		_ = conn.Close()
	}
}

// close stops the link; the zone's writes then fail until the sandbox stops it too.
func (l *remoteWriteLink) close() error {
	if err := l.srv.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("close remote-write link: %w", err)
	}
	return nil
}
