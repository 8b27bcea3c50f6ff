package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"

	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	kjson "sigs.k8s.io/json"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// CanaryCommandMutator records who asked for an operator command (coalmine promote,
// abort, retry, pause, resume): whenever a request sets or changes coalmine.dev/command on
// a Canary, it stamps coalmine.dev/command-by with the request's authenticated user,
// overwriting whatever the request carried. The progression loop names that user in the
// Event of the command, so "who asked" comes from the apiserver's authentication, never
// from text a user wrote.
//
// The rule, from the request alone (no API call):
//   - no command in the new object: no stamp either (a stamp without a command, or one
//     left behind when a user removed the command, is removed);
//   - a command created or changed by this request: stamped with req.UserInfo.Username;
//   - the same command as in the old object: the old object's stamp, whatever the request
//     says (an update that keeps the command cannot rewrite who asked for it).
//
// The webhook fails open (failurePolicy Ignore, as the Canary validator): a command set
// while coalmine's webhook server is down keeps whatever coalmine.dev/command-by the
// request carried (the loop says "an unknown user" when there is none). The shipped
// configuration's matchConditions send only requests whose Canary carries a command or a
// stamp, so GitOps applies of Canaries never call it.
type CanaryCommandMutator struct{}

var _ admission.Handler = &CanaryCommandMutator{}

// canaryMetaView is the part of a Canary the mutator reads.
type canaryMetaView struct {
	Metadata *struct {
		Name        string            `json:"name"`
		Namespace   string            `json:"namespace"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
}

func decodeCanaryMeta(raw []byte) (map[string]string, error) {
	if t := bytes.TrimLeft(raw, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, errors.New("not a JSON object")
	}
	v := &canaryMetaView{}
	if err := kjson.UnmarshalCaseSensitivePreserveInts(raw, v); err != nil {
		return nil, err
	}
	if v.Metadata == nil {
		return nil, nil
	}
	return v.Metadata.Annotations, nil
}

// Handle implements admission.Handler.
func (m *CanaryCommandMutator) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update || req.SubResource != "" {
		return admission.Allowed("")
	}
	ann, err := decodeCanaryMeta(req.Object.Raw)
	if err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode Canary: %w", err))
	}
	var old map[string]string
	if req.Operation == admissionv1.Update {
		if old, err = decodeCanaryMeta(req.OldObject.Raw); err != nil {
			return admission.Errored(http.StatusBadRequest, fmt.Errorf("decode old Canary: %w", err))
		}
	}
	want, stamped := CommandBy(old, ann, req.Operation == admissionv1.Update, req.UserInfo.Username)
	got, present := ann[v1beta1.AnnotationCommandBy]
	if present == stamped && got == want {
		return admission.Allowed("")
	}
	path := "/metadata/annotations/" + jsonPointerEscape.Replace(v1beta1.AnnotationCommandBy)
	var op jsonpatch.Operation
	var warnings []string
	switch {
	case stamped:
		// The annotations map exists: it holds the command.
		op = jsonpatch.NewOperation("add", path, want)
		if present && got != "" {
			warnings = append(warnings, fmt.Sprintf("%s is coalmine's record of who asked for %s=%s; %q was replaced by %q",
				v1beta1.AnnotationCommandBy, v1beta1.AnnotationCommand, ann[v1beta1.AnnotationCommand], got, want))
		}
	default:
		op = jsonpatch.NewOperation("remove", path, nil)
	}
	if logger := log.FromContext(ctx).V(1); logger.Enabled() {
		logger.Info("stamp Canary command", "canary", req.Namespace+"/"+req.Name,
			"command", ann[v1beta1.AnnotationCommand], "by", want, "user", req.UserInfo.Username,
			"dryRun", req.DryRun != nil && *req.DryRun)
	}
	pt := admissionv1.PatchTypeJSONPatch
	return admission.Response{
		Patches:           []jsonpatch.Operation{op},
		AdmissionResponse: admissionv1.AdmissionResponse{Allowed: true, PatchType: &pt},
	}.WithWarnings(warnings...)
}

// CommandBy is the coalmine.dev/command-by a Canary must carry after a request by user
// (stamped false: none): see CanaryCommandMutator. old is the old object's annotations of
// an update.
func CommandBy(old, ann map[string]string, update bool, user string) (by string, stamped bool) {
	cmd := ann[v1beta1.AnnotationCommand]
	switch {
	case cmd == "":
		return "", false
	case !update || old[v1beta1.AnnotationCommand] != cmd:
		return user, user != ""
	default:
		by, stamped = old[v1beta1.AnnotationCommandBy]
		return by, stamped
	}
}
