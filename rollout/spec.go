package rollout

import (
	"strings"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// ReasonInvalidSpec: the Canary sets a Flagger field coalmine refuses on Kuma
// (v1beta1.UnsupportedFields). The Canary webhook denies it; this is the same check for a
// Canary admitted while the webhook was down (it fails open).
const ReasonInvalidSpec = "InvalidSpec"

// checkSpec stops the pass when the Canary sets a refused field: Ready=False, reason
// InvalidSpec, with the webhook's message. Nothing else is done for the Canary (a guarded
// target stays guarded as it is) until the field is removed. It reports whether the pass
// may go on.
func (x *pass) checkSpec() bool {
	errs := v1beta1.UnsupportedFields(x.canary)
	if len(errs) == 0 {
		return true
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	x.stop(ReasonInvalidSpec, "%s", strings.Join(msgs, "; "))
	return false
}
