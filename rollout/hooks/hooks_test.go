package hooks

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

func TestCallSendsFlaggersPayload(t *testing.T) {
	var got Payload
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s with %q", r.Method, r.Header.Get("Content-Type"))
		}
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
			t.Error(err)
		}
	}))
	defer srv.Close()
	hook := &v1beta1.CanaryWebhook{Name: "load", URL: srv.URL, Metadata: map[string]string{"cmd": "hey -z 1m http://alice-canary/", "eventMessage": "hook's own"}}
	err := (&HTTP{}).Call(context.Background(), hook, Payload{
		Name: "alice", Namespace: "apps-a-mesh-a", Phase: v1beta1.PhaseProgressing, Checksum: "0123456789",
		Metadata: map[string]string{"eventMessage": "Advance canary weight to 10%"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Payload{
		Name: "alice", Namespace: "apps-a-mesh-a", Phase: v1beta1.PhaseProgressing, Checksum: "0123456789",
		Type:     v1beta1.RolloutHook, // a hook without a type is a rollout hook
		Metadata: map[string]string{"cmd": "hey -z 1m http://alice-canary/", "eventMessage": "Advance canary weight to 10%"},
	}
	if got.Name != want.Name || got.Namespace != want.Namespace || got.Phase != want.Phase || got.Checksum != want.Checksum ||
		got.Type != want.Type || len(got.Metadata) != 2 || got.Metadata["cmd"] != want.Metadata["cmd"] || got.Metadata["eventMessage"] != want.Metadata["eventMessage"] {
		t.Errorf("payload %+v, want %+v", got, want)
	}
	if hook.Metadata["eventMessage"] != "hook's own" {
		t.Error("the spec's metadata was changed")
	}
}

func TestCallErrors(t *testing.T) {
	closed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "approval pending: ask #release\nsecond line", http.StatusForbidden)
	}))
	defer closed.Close()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(time.Second):
		}
	}))
	defer slow.Close()
	tests := []struct {
		name string
		hook v1beta1.CanaryWebhook
		want string
	}{
		{"gate closed: status and the answer's first line", v1beta1.CanaryWebhook{Name: "approval", URL: closed.URL},
			closed.URL + " answered 403 Forbidden: approval pending: ask #release"},
		{"timeout", v1beta1.CanaryWebhook{Name: "slow", URL: slow.URL, Timeout: "100ms"}, "context deadline exceeded"},
		{"nobody listening", v1beta1.CanaryWebhook{Name: "gone", URL: "http://127.0.0.1:1/"}, "call http://127.0.0.1:1/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := (&HTTP{}).Call(context.Background(), &tt.hook, Payload{Name: "alice"})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestCallRetries(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	if err := (&HTTP{RetryDelay: time.Millisecond}).Call(context.Background(), &v1beta1.CanaryWebhook{Name: "flaky", URL: srv.URL, Retries: 2}, Payload{}); err != nil {
		t.Fatalf("third try should have passed: %v", err)
	}
	calls.Store(-10)
	err := (&HTTP{RetryDelay: time.Millisecond}).Call(context.Background(), &v1beta1.CanaryWebhook{Name: "flaky", URL: srv.URL, Retries: 1}, Payload{})
	if err == nil || !strings.Contains(err.Error(), "after 1 retries") {
		t.Errorf("error %v", err)
	}
}

func TestOf(t *testing.T) {
	c := &v1beta1.Canary{Spec: v1beta1.CanarySpec{Analysis: &v1beta1.CanaryAnalysis{Webhooks: []v1beta1.CanaryWebhook{
		{Name: "load"}, {Name: "gate", Type: v1beta1.ConfirmRolloutHook}, {Name: "smoke", Type: v1beta1.RolloutHook},
	}}}}
	var names []string
	for _, h := range Of(c, v1beta1.RolloutHook) {
		names = append(names, h.Name)
	}
	if strings.Join(names, ",") != "load,smoke" {
		t.Errorf("rollout hooks %v", names)
	}
	if len(Of(&v1beta1.Canary{}, v1beta1.RolloutHook)) != 0 {
		t.Error("hooks without an analysis")
	}
}
