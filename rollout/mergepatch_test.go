package rollout

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// TestMergeDiffAppliesToTheTarget: applied to a, mergeDiff's patch gives b, for members
// added, removed, changed, nested, escaped and spaced as json.Marshal never spaces them.
func TestMergeDiffAppliesToTheTarget(t *testing.T) {
	tests := []struct{ name, a, b string }{
		{"equal", `{"x":1}`, `{"x":1}`},
		{"empty to some", `{}`, `{"x":1,"y":"s"}`},
		{"some to empty", `{"x":1,"y":"s"}`, `{}`},
		{"changed scalar and removed member", `{"x":1,"y":true,"z":null}`, `{"x":2,"y":true}`},
		{"nested object diffed", `{"o":{"a":1,"b":{"c":[1,2]}},"k":"v"}`, `{"o":{"b":{"c":[1,2],"d":"e"}},"k":"v"}`},
		{"array replaced whole", `{"l":[{"a":1},{"b":2}]}`, `{"l":[{"a":1}]}`},
		{"object to scalar", `{"o":{"a":1}}`, `{"o":"flat"}`},
		{"escapes and brackets in strings", `{"m":"a \"q\" {not} [an] \\ end","n":1}`, `{"m":"b \"}\"","n":1}`},
		{"spaced input", ` { "x" : [ 1 , 2 ] , "y" : { "z" : 1 } } `, `{"x":[1,2],"y":{"z":2}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			patch, err := mergeDiff(nil, []byte(tt.a), []byte(tt.b))
			if err != nil {
				t.Fatalf("mergeDiff: %v", err)
			}
			merged, err := jsonpatch.MergePatch([]byte(tt.a), patch)
			if err != nil {
				t.Fatalf("apply %s: %v", patch, err)
			}
			var got, want any
			if err := json.Unmarshal(merged, &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tt.b), &want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("a + %s = %s, want %s", patch, merged, tt.b)
			}
		})
	}
}

func TestMergeDiffRefusesWhatIsNotAnObject(t *testing.T) {
	for _, in := range []string{``, `[1]`, `"s"`, `{"x":1`, `{"x" 1}`, `{"x":"open}`, `{x:1}`} {
		if _, err := mergeDiff(nil, []byte(in), []byte(`{}`)); err == nil {
			t.Errorf("mergeDiff(%q, {}): no error", in)
		}
	}
}

// TestStatusPatchIsNilWhenTheEncodingsAgree: a status whose only difference is below the
// second a stored time keeps is not written again.
func TestStatusPatchIsNilWhenTheEncodingsAgree(t *testing.T) {
	at := time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC)
	stored := v1beta1.CanaryStatus{Phase: v1beta1.PhaseProgressing, LastStepTime: &metav1.Time{Time: at}}
	next := stored
	next.LastStepTime = &metav1.Time{Time: at.Add(300 * time.Millisecond)}
	if patch, err := statusPatch(&stored, &next); err != nil || patch != nil {
		t.Errorf("patch %s (%v), want none", patch, err)
	}
	next.CanaryWeight = 10
	if patch, err := statusPatch(&stored, &next); err != nil || string(patch) != `{"status":{"canaryWeight":10}}` {
		t.Errorf("patch %s (%v), want only the weight", patch, err)
	}
}
