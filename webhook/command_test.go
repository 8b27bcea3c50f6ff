package webhook

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

const operatorUser = "jane@example.com"

// withCommand is the seed's Canary carrying an operator command and, unless by is
// empty, a command-by annotation.
func withCommand(t *testing.T, cmd, by string) *v1beta1.Canary {
	t.Helper()
	c := seed(t)
	c.Namespace = testNamespace
	if cmd != "" {
		c.Annotations[v1beta1.AnnotationCommand] = cmd
	}
	if by != "" {
		c.Annotations[v1beta1.AnnotationCommandBy] = by
	}
	return c
}

// mutateCanary runs the command mutator on a request of user and returns the
// annotations the apiserver would store, and the response.
func mutateCanary(t *testing.T, op admissionv1.Operation, user string, obj, old *v1beta1.Canary) (map[string]string, []string) {
	t.Helper()
	var oldObj any
	if old != nil {
		oldObj = old
	}
	req := review(t, op, user, canariesResource, obj, oldObj)
	resp := (&CanaryCommandMutator{}).Handle(context.Background(), req)
	if !resp.Allowed {
		t.Fatalf("denied: %v", resp.Result)
	}
	var got v1beta1.Canary
	if err := json.Unmarshal(applyPatch(t, req.Object.Raw, resp), &got); err != nil {
		t.Fatal(err)
	}
	// The patch keeps every other annotation.
	for k, v := range obj.Annotations {
		if k != v1beta1.AnnotationCommandBy && got.Annotations[k] != v {
			t.Errorf("annotation %s = %q after the patch, want %q untouched", k, got.Annotations[k], v)
		}
	}
	return got.Annotations, resp.Warnings
}

// TestCommandByStampedFromUser: the user of the request that sets or changes a command is
// the one recorded, on create and update, dry run or not.
func TestCommandByStampedFromUser(t *testing.T) {
	for _, tt := range []struct {
		name     string
		op       admissionv1.Operation
		obj, old *v1beta1.Canary
		want     string
	}{
		{"promote set by an update", admissionv1.Update, withCommand(t, v1beta1.CommandPromote, ""), withCommand(t, "", ""), operatorUser},
		{"a Canary created with a command", admissionv1.Create, withCommand(t, v1beta1.CommandPause, ""), nil, operatorUser},
		{"a command changed from pause to resume", admissionv1.Update, withCommand(t, v1beta1.CommandResume, "bob"), withCommand(t, v1beta1.CommandPause, "bob"), operatorUser},
		{"an unknown command is stamped too (the validator refuses it)", admissionv1.Update, withCommand(t, "yolo", ""), withCommand(t, "", ""), operatorUser},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ann, _ := mutateCanary(t, tt.op, operatorUser, tt.obj, tt.old)
			if got := ann[v1beta1.AnnotationCommandBy]; got != tt.want {
				t.Errorf("%s = %q, want %q", v1beta1.AnnotationCommandBy, got, tt.want)
			}
		})
	}
	t.Run("dry run gets the same stamp", func(t *testing.T) {
		req := review(t, admissionv1.Update, operatorUser, canariesResource, withCommand(t, v1beta1.CommandAbort, ""), withCommand(t, "", ""))
		req.DryRun = new(true)
		resp := (&CanaryCommandMutator{}).Handle(context.Background(), req)
		if len(resp.Patches) != 1 || resp.Patches[0].Value != operatorUser {
			t.Errorf("patches %+v, want the stamp", resp.Patches)
		}
	})
	t.Run("an update that changes no command passes untouched", func(t *testing.T) {
		c := withCommand(t, "", "")
		changed := c.DeepCopy()
		changed.Spec.Analysis.Threshold = 3
		resp := (&CanaryCommandMutator{}).Handle(context.Background(), review(t, admissionv1.Update, fluxUser, canariesResource, changed, c))
		if !resp.Allowed || len(resp.Patches) != 0 {
			t.Errorf("response %+v, want allowed without a patch", resp)
		}
	})
	t.Run("the loop clearing a command is left alone", func(t *testing.T) {
		resp := (&CanaryCommandMutator{}).Handle(context.Background(), review(t, admissionv1.Update, controllerUser, canariesResource,
			withCommand(t, "", ""), withCommand(t, v1beta1.CommandPromote, operatorUser)))
		if !resp.Allowed || len(resp.Patches) != 0 {
			t.Errorf("response %+v, want allowed without a patch", resp)
		}
	})
	t.Run("status and delete requests pass", func(t *testing.T) {
		req := review(t, admissionv1.Update, operatorUser, canariesResource, withCommand(t, v1beta1.CommandPromote, ""), withCommand(t, "", ""))
		req.SubResource = "status"
		if resp := (&CanaryCommandMutator{}).Handle(context.Background(), req); !resp.Allowed || len(resp.Patches) != 0 {
			t.Errorf("status update: %+v", resp)
		}
		req = review(t, admissionv1.Delete, operatorUser, canariesResource, nil, withCommand(t, v1beta1.CommandPromote, ""))
		if resp := (&CanaryCommandMutator{}).Handle(context.Background(), req); !resp.Allowed || len(resp.Patches) != 0 {
			t.Errorf("delete: %+v", resp)
		}
	})
}

// TestCommandByCannotBeForged: whatever a request writes into coalmine.dev/command-by, the
// stored value is the authenticated user who set the command (or, for an update that
// keeps the command, who set it before), and there is no stamp without a command.
func TestCommandByCannotBeForged(t *testing.T) {
	for _, tt := range []struct {
		name     string
		op       admissionv1.Operation
		user     string
		obj, old *v1beta1.Canary
		want     string // "" = no annotation
		warn     bool   // the response warns that the request's value was replaced
	}{
		{"a command with someone else's name", admissionv1.Update, "mallory",
			withCommand(t, v1beta1.CommandPromote, operatorUser), withCommand(t, "", ""), "mallory", true},
		{"a create with someone else's name", admissionv1.Create, "mallory",
			withCommand(t, v1beta1.CommandAbort, "system:serviceaccount:coalmine-system:coalmine"), nil, "mallory", true},
		{"rewriting who asked for a pending command", admissionv1.Update, "mallory",
			withCommand(t, v1beta1.CommandPause, "mallory"), withCommand(t, v1beta1.CommandPause, operatorUser), operatorUser, true},
		{"removing the stamp of a pending command", admissionv1.Update, "mallory",
			withCommand(t, v1beta1.CommandPause, ""), withCommand(t, v1beta1.CommandPause, operatorUser), operatorUser, false},
		{"a GitOps apply replaying an old stamp", admissionv1.Update, fluxUser,
			withCommand(t, v1beta1.CommandAbort, operatorUser), withCommand(t, v1beta1.CommandPause, operatorUser), fluxUser, true},
		{"a stamp without a command", admissionv1.Update, "mallory",
			withCommand(t, "", operatorUser), withCommand(t, "", ""), "", false},
		{"a stamp left when the command is removed", admissionv1.Update, "mallory",
			withCommand(t, "", operatorUser), withCommand(t, v1beta1.CommandPause, operatorUser), "", false},
		{"a stamp on create without a command", admissionv1.Create, "mallory",
			withCommand(t, "", operatorUser), nil, "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ann, warnings := mutateCanary(t, tt.op, tt.user, tt.obj, tt.old)
			got, present := ann[v1beta1.AnnotationCommandBy]
			if tt.want == "" && present {
				t.Errorf("%s = %q, want none", v1beta1.AnnotationCommandBy, got)
			}
			if tt.want != "" && got != tt.want {
				t.Errorf("%s = %q, want %q", v1beta1.AnnotationCommandBy, got, tt.want)
			}
			replaced := tt.obj.Annotations[v1beta1.AnnotationCommandBy]
			if tt.warn && (len(warnings) != 1 || !strings.Contains(warnings[0], replaced)) {
				t.Errorf("warnings %v, want one naming the replaced %q", warnings, replaced)
			}
			if !tt.warn && len(warnings) > 0 {
				t.Errorf("warnings %v, want none", warnings)
			}
		})
	}
	t.Run("idempotent: a second call changes nothing", func(t *testing.T) {
		old := withCommand(t, "", "")
		ann, _ := mutateCanary(t, admissionv1.Update, "mallory", withCommand(t, v1beta1.CommandPromote, operatorUser), old)
		again := withCommand(t, v1beta1.CommandPromote, ann[v1beta1.AnnotationCommandBy])
		resp := (&CanaryCommandMutator{}).Handle(context.Background(), review(t, admissionv1.Update, "mallory", canariesResource, again, old))
		if len(resp.Patches) != 0 {
			t.Errorf("re-invocation patched %+v", resp.Patches)
		}
	})
}

func TestCanaryValidatorCommands(t *testing.T) {
	v := &CanaryValidator{}
	t.Run("an unknown command is refused with its field path", func(t *testing.T) {
		resp := v.Handle(context.Background(), review(t, admissionv1.Update, operatorUser, canariesResource, withCommand(t, "promte", operatorUser), withCommand(t, "", "")))
		if resp.Allowed {
			t.Fatal("allowed")
		}
		if got := causeFields(resp); len(got) != 1 || got[0] != "metadata.annotations[coalmine.dev/command]" {
			t.Errorf("cause fields %v", got)
		}
	})
	t.Run("a command on a Canary whose spec is invalid is allowed", func(t *testing.T) {
		bad := withCommand(t, "", "")
		bad.Spec.Analysis.StepWeight = 60
		cmd := bad.DeepCopy()
		cmd.Annotations[v1beta1.AnnotationCommand] = v1beta1.CommandAbort
		cmd.Annotations[v1beta1.AnnotationCommandBy] = operatorUser
		if resp := v.Handle(context.Background(), review(t, admissionv1.Update, operatorUser, canariesResource, cmd, bad)); !resp.Allowed {
			t.Fatalf("denied: %s", resp.Result.Message)
		}
	})
	t.Run("every command is accepted", func(t *testing.T) {
		for _, c := range v1beta1.Commands {
			if resp := v.Handle(context.Background(), review(t, admissionv1.Update, operatorUser, canariesResource, withCommand(t, c, operatorUser), withCommand(t, "", ""))); !resp.Allowed {
				t.Errorf("%s denied: %s", c, resp.Result.Message)
			}
		}
	})
}
