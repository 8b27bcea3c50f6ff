// Package hooks calls a Canary's webhooks (spec.analysis.webhooks) the way Flagger does:
// a POST of a small JSON payload, success being a 2xx answer. The progression loop decides
// what a failure means for each hook type (a gate that stays closed, a failed check, a
// warning); this package only makes the calls.
package hooks

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// Payload is the body of every call: Flagger's CanaryWebhookPayload, so load testers and
// approval gates written for Flagger (flagger-loadtester, for one) work unchanged.
type Payload struct {
	Name      string              `json:"name"`
	Namespace string              `json:"namespace"`
	Phase     v1beta1.CanaryPhase `json:"phase"`
	// Checksum identifies the revision under analysis (Flagger: a hash of the canary spec).
	Checksum string            `json:"checksum"`
	Type     v1beta1.HookType  `json:"type"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// Caller calls one webhook of a Canary.
type Caller interface {
	// Call POSTs p (with the hook's type, and its metadata under p's) to hook and returns
	// an error unless it answered 2xx, after hook.Retries further tries. The error says
	// what happened, not which hook: the caller names it.
	Call(ctx context.Context, hook *v1beta1.CanaryWebhook, p Payload) error
}

// HTTP calls webhooks over HTTP(S).
type HTTP struct {
	// Client makes the calls; nil is http.DefaultClient (each call has the hook's timeout).
	Client *http.Client
	// RetryDelay is the first wait before a retry, doubling after each; 0 is 500 ms, so a
	// hook that just restarted gets time.
	RetryDelay time.Duration
}

// Of returns the webhooks of c of type t in spec order; a webhook without a type is a
// rollout hook.
func Of(c *v1beta1.Canary, t v1beta1.HookType) []*v1beta1.CanaryWebhook {
	if c.Spec.Analysis == nil {
		return nil
	}
	var out []*v1beta1.CanaryWebhook
	for i := range c.Spec.Analysis.Webhooks {
		if h := &c.Spec.Analysis.Webhooks[i]; TypeOf(h) == t {
			out = append(out, h)
		}
	}
	return out
}

// TypeOf is the type of hook; one without a type is a rollout hook, as in Flagger.
func TypeOf(hook *v1beta1.CanaryWebhook) v1beta1.HookType {
	if hook.Type == "" {
		return v1beta1.RolloutHook
	}
	return hook.Type
}

// Call implements Caller.
func (h *HTTP) Call(ctx context.Context, hook *v1beta1.CanaryWebhook, p Payload) error {
	p.Type = TypeOf(hook)
	if len(hook.Metadata) > 0 {
		md := maps.Clone(hook.Metadata)
		maps.Copy(md, p.Metadata)
		p.Metadata = md
	}
	body, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode payload: %w", err)
	}
	timeout := v1beta1.DefaultWebhookTimeout
	if d, err := time.ParseDuration(hook.Timeout); err == nil && d > 0 {
		timeout = d
	}
	client := h.Client
	if client == nil {
		client = http.DefaultClient
	}
	if hook.DisableTLS {
		client = insecure(client)
	}
	delay := h.RetryDelay
	if delay <= 0 {
		delay = 500 * time.Millisecond
	}
	backoff := wait.Backoff{Duration: delay, Factor: 2, Steps: hook.Retries + 1}
	var last error
	for {
		if last = post(ctx, client, hook.URL, body, timeout); last == nil {
			return nil
		}
		if backoff.Steps <= 1 {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(backoff.Step()):
		}
	}
	if hook.Retries > 0 {
		return fmt.Errorf("%w (after %d retries)", last, hook.Retries)
	}
	return last
}

// insecure is c with TLS verification off (a webhook's disableTLS), one per client.
func insecure(c *http.Client) *http.Client {
	if v, ok := insecureClients.Load(c); ok {
		return v.(*http.Client)
	}
	base, _ := c.Transport.(*http.Transport)
	if base == nil {
		base, _ = http.DefaultTransport.(*http.Transport)
	}
	t := base.Clone()
	if t.TLSClientConfig == nil {
		t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	t.TLSClientConfig.InsecureSkipVerify = true //nolint:gosec // the webhook's disableTLS
	ic := *c
	ic.Transport = t
	v, _ := insecureClients.LoadOrStore(c, &ic)
	return v.(*http.Client)
}

var insecureClients sync.Map // *http.Client -> its insecure copy

func post(ctx context.Context, client *http.Client, url string, body []byte, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("call %s: %w", url, err)
	}
	defer resp.Body.Close()
	// The answer's first line says why a gate is closed (flagger-loadtester writes one).
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		text := strings.TrimSpace(string(msg))
		if i := strings.IndexByte(text, '\n'); i >= 0 {
			text = text[:i]
		}
		if text != "" {
			return fmt.Errorf("%s answered %s: %s", url, resp.Status, text)
		}
		return fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return nil
}
