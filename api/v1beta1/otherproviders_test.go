package v1beta1

import (
	"encoding/json"
	"strings"
	"testing"
	"unsafe"
)

// TestCanaryStaysInItsSizeClass: a Canary fits the 768-byte size class with the
// allocator's 8-byte header (see Canary). A field that breaks this should go behind one of
// the embedded pointers unless a valid Canary sets it.
func TestCanaryStaysInItsSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(Canary{}); n > 760 {
		t.Errorf("Canary is %d bytes, over 760: each cached Canary and each copy a pass makes moves to the 896-byte size class", n)
	}
}

// TestOtherProvidersFieldsRoundTrip: the other providers' fields sit behind embedded
// pointers (so that a valid Canary does not carry them), yet read and write under
// Flagger's JSON names, are copied deeply, and are refused by name; a Canary without
// them leaves both pointers nil.
func TestOtherProvidersFieldsRoundTrip(t *testing.T) {
	const in = `{"spec":{"targetRef":{"name":"podinfo"},"ingressRef":{"name":"web"},` +
		`"service":{"port":9898,"retries":{"attempts":3},"hosts":["app.example.com"]}}}`
	var c Canary
	if err := json.Unmarshal([]byte(in), &c); err != nil {
		t.Fatal(err)
	}
	if c.Spec.FlaggerRefs == nil || c.Spec.IngressRef == nil || c.Spec.IngressRef.Name != "web" {
		t.Fatalf("spec.ingressRef not read: %+v", c.Spec.FlaggerRefs)
	}
	if r := c.Spec.Service.OtherProviderRouting; r == nil || r.Retries == nil || r.Retries.Attempts != 3 || len(r.Hosts) != 1 {
		t.Fatalf("spec.service.retries/hosts not read: %+v", r)
	}
	out, err := json.Marshal(&c.Spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"ingressRef":{"name":"web"}`, `"retries":{"attempts":3}`, `"hosts":["app.example.com"]`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("written spec %s lacks %s", out, want)
		}
	}
	cp := c.DeepCopy()
	cp.Spec.Service.Hosts[0] = "changed"
	cp.Spec.IngressRef.Name = "changed"
	if c.Spec.Service.Hosts[0] != "app.example.com" || c.Spec.IngressRef.Name != "web" {
		t.Error("DeepCopy shares the other providers' fields with the original")
	}
	errs := UnsupportedFields(&c).ToAggregate().Error()
	for _, path := range []string{"spec.ingressRef", "spec.service.retries", "spec.service.hosts"} {
		if !strings.Contains(errs, path) {
			t.Errorf("refusals %q do not name %s", errs, path)
		}
	}

	var plain Canary
	if err := json.Unmarshal([]byte(`{"spec":{"targetRef":{"name":"podinfo"},"service":{"port":9898}}}`), &plain); err != nil {
		t.Fatal(err)
	}
	if plain.Spec.FlaggerRefs != nil || plain.Spec.Service.OtherProviderRouting != nil {
		t.Errorf("a Canary without other providers' fields got %+v, %+v", plain.Spec.FlaggerRefs, plain.Spec.Service.OtherProviderRouting)
	}
	if errs := UnsupportedFields(&plain); len(errs) != 0 {
		t.Errorf("refusals %v for a Canary that sets none", errs)
	}
}
