package e2e

import "testing"

func TestWebhookZZStopExperiment(t *testing.T) {
	env := sharedRollout(t)
	env.stopCoalmine(t)
}
