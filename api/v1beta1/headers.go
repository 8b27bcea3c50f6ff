package v1beta1

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
)

// ProviderHeaders are the extra HTTP headers of a metrics provider, in Flagger's shape: an
// http.Header, each name with a list of values.
type ProviderHeaders map[string][]string

// UnmarshalJSON reads Flagger's shape ({"X-Scope-OrgID": ["a"]}) and coalmine's earlier
// one ({"X-Scope-OrgID": "a"}), so MetricTemplates stored before the change still decode
// (the CRD only accepts Flagger's shape on new writes). A value of any other JSON type is
// kept as its JSON text, so that one odd object can never break the decoding of a list.
func (h *ProviderHeaders) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		*h = nil
		return nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("headers: %w", err)
	}
	out := make(ProviderHeaders, len(raw))
	for k, v := range raw {
		var list []string
		if err := json.Unmarshal(v, &list); err == nil {
			out[k] = list
			continue
		}
		var one string
		if err := json.Unmarshal(v, &one); err == nil {
			out[k] = []string{one}
			continue
		}
		out[k] = []string{string(bytes.TrimSpace(v))}
	}
	*h = out
	return nil
}

// HTTP returns the headers as an http.Header with canonical names.
func (h ProviderHeaders) HTTP() http.Header {
	if len(h) == 0 {
		return nil
	}
	out := make(http.Header, len(h))
	for k, vs := range h {
		for _, v := range vs {
			out.Add(k, v)
		}
	}
	return out
}
