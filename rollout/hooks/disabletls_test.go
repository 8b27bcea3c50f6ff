package hooks

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// TestDisableTLS: a webhook's disableTLS (Flagger's) skips verification of its https
// certificate; without it a self-signed receiver is an error.
func TestDisableTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	h := &HTTP{}
	hook := &v1beta1.CanaryWebhook{Name: "gate", URL: srv.URL}
	if err := h.Call(context.Background(), hook, Payload{}); err == nil {
		t.Fatal("a self-signed certificate was accepted without disableTLS")
	}
	hook.DisableTLS = true
	if err := h.Call(context.Background(), hook, Payload{}); err != nil {
		t.Fatalf("disableTLS: %v", err)
	}
}
