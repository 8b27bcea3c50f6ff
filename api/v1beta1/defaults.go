package v1beta1

import (
	"fmt"
	"math"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"
)

// Defaults that apply when a field is left empty: Flagger's (v1.36.1: canary.go's Get*
// methods, the scheduler's maxWeight) where Flagger has one. Where coalmine differs on
// purpose the README's "Migrating from Flagger" table says so: stepWeight has a default
// (Flagger's CRD requires stepWeight, stepWeights or iterations), and an interval below
// 10s is kept (Flagger raises it to 10s).
const (
	DefaultInterval       = time.Minute
	DefaultMetricInterval = time.Minute
	// DefaultThreshold is Flagger's GetAnalysisThreshold default.
	DefaultThreshold = 1
	// DefaultMaxWeight is Flagger's total weight: without maxWeight the canary goes to 100%.
	DefaultMaxWeight               = 100
	DefaultStepWeight              = 10
	DefaultReadyThreshold          = 100
	DefaultProgressDeadlineSeconds = 600
	DefaultWebhookTimeout          = 10 * time.Second
	DefaultPortName                = "http"
)

// ApexName is the apex Service name: spec.service.name, else the target's name.
func (c *Canary) ApexName() string {
	if c.Spec.Service.Name != "" {
		return c.Spec.Service.Name
	}
	return c.Spec.TargetRef.Name
}

// PrimaryName is the Service that always selects the stable pods.
func (c *Canary) PrimaryName() string { return c.ApexName() + PrimarySuffix }

// CanaryName is the Service and Deployment of the revision under analysis.
func (c *Canary) CanaryName() string { return c.ApexName() + CanarySuffix }

// CanaryDeploymentName is the Deployment created from the new template.
func (c *Canary) CanaryDeploymentName() string { return c.Spec.TargetRef.Name + CanarySuffix }

// AnalysisInterval is analysis.interval parsed, or the default. Validation rejects a
// malformed value, so a parse error here falls back to the default.
func (c *Canary) AnalysisInterval() time.Duration {
	if a := c.Spec.Analysis; a != nil && a.Interval != "" {
		if d, err := time.ParseDuration(a.Interval); err == nil && d > 0 {
			return d
		}
	}
	return DefaultInterval
}

// Threshold is analysis.threshold or the default.
func (c *Canary) Threshold() int {
	if a := c.Spec.Analysis; a != nil && a.Threshold > 0 {
		return a.Threshold
	}
	return DefaultThreshold
}

// MaxWeight is analysis.maxWeight or the default (the last stepWeights entry wins).
func (c *Canary) MaxWeight() int {
	a := c.Spec.Analysis
	if a == nil {
		return DefaultMaxWeight
	}
	if len(a.StepWeights) > 0 {
		return a.StepWeights[len(a.StepWeights)-1]
	}
	if a.MaxWeight > 0 {
		return a.MaxWeight
	}
	return DefaultMaxWeight
}

// Steps is the canary weight sequence: stepWeights, or stepWeight up to maxWeight.
func (c *Canary) Steps() []int {
	a := c.Spec.Analysis
	if a != nil && len(a.StepWeights) > 0 {
		return append([]int(nil), a.StepWeights...)
	}
	step, max := DefaultStepWeight, c.MaxWeight()
	if a != nil && a.StepWeight > 0 {
		step = a.StepWeight
	}
	var out []int
	for w := step; w < max; w += step {
		out = append(out, w)
	}
	return append(out, max)
}

// CanaryReadyThreshold is analysis.canaryReadyThreshold or 100.
func (c *Canary) CanaryReadyThreshold() int {
	if a := c.Spec.Analysis; a != nil && a.CanaryReadyThreshold != nil {
		return *a.CanaryReadyThreshold
	}
	return DefaultReadyThreshold
}

// PrimaryReadyThreshold is analysis.primaryReadyThreshold or 100.
func (c *Canary) PrimaryReadyThreshold() int {
	if a := c.Spec.Analysis; a != nil && a.PrimaryReadyThreshold != nil {
		return *a.PrimaryReadyThreshold
	}
	return DefaultReadyThreshold
}

// ProgressDeadline is progressDeadlineSeconds or the default.
func (c *Canary) ProgressDeadline() time.Duration {
	if p := c.Spec.ProgressDeadlineSeconds; p != nil && *p > 0 {
		return time.Duration(*p) * time.Second
	}
	return DefaultProgressDeadlineSeconds * time.Second
}

// PortName is service.portName or http.
func (c *Canary) PortName() string {
	if c.Spec.Service.PortName != "" {
		return c.Spec.Service.PortName
	}
	return DefaultPortName
}

// Interval of a metric, or the default.
func (m *CanaryMetric) IntervalOrDefault() time.Duration {
	if m.Interval != "" {
		if d, err := time.ParseDuration(m.Interval); err == nil && d > 0 {
			return d
		}
	}
	return DefaultMetricInterval
}

// Strategy is how a revision is analysed, chosen as Flagger chooses it.
type Strategy string

const (
	// StrategyCanary shifts a growing weight of all traffic (stepWeight(s) up to maxWeight).
	StrategyCanary Strategy = "Canary"
	// StrategyBlueGreen (analysis.iterations, no match): the canary is analysed on traffic
	// sent straight to <app>-canary while users stay on primary, then the route switches
	// to the canary for one more check, and the revision is promoted.
	StrategyBlueGreen Strategy = "BlueGreen"
	// StrategyABTesting (analysis.iterations and analysis.match): the requests that match
	// go to the canary for the whole analysis, the others to primary.
	StrategyABTesting Strategy = "ABTesting"
)

// Strategy is A/B testing with iterations and match, blue/green with iterations alone,
// else a weighted canary (Flagger: iterations wins over stepWeight and maxWeight).
func (c *Canary) Strategy() Strategy {
	a := c.Spec.Analysis
	switch {
	case a == nil || a.Iterations <= 0:
		return StrategyCanary
	case len(a.Match) > 0:
		return StrategyABTesting
	}
	return StrategyBlueGreen
}

// Iterations is analysis.iterations: the passed checks blue/green and A/B testing need.
func (c *Canary) Iterations() int {
	if a := c.Spec.Analysis; a != nil && a.Iterations > 0 {
		return a.Iterations
	}
	return 0
}

// Match is analysis.match, nil when unset.
func (c *Canary) Match() []HTTPMatchRequest {
	if a := c.Spec.Analysis; a != nil {
		return a.Match
	}
	return nil
}

// CanaryReplicasOf resolves a spec.canaryReplicas value (a number, or a percentage of
// target rounded up) against target replicas; nil means target. The error says why a
// value is not usable: the webhook refuses it, the loop falls back to target.
func CanaryReplicasOf(v *intstr.IntOrString, target int32) (int32, error) {
	if v == nil {
		return target, nil
	}
	if v.Type == intstr.String {
		var pct int
		if _, err := fmt.Sscanf(v.StrVal, "%d%%", &pct); err != nil || fmt.Sprintf("%d%%", pct) != v.StrVal {
			return target, fmt.Errorf("%q is neither a number nor a percentage such as 25%%", v.StrVal)
		}
		if pct < 1 || pct > 100 {
			return target, fmt.Errorf("%q must be between 1%% and 100%% of the target's replicas", v.StrVal)
		}
		return int32(math.Ceil(float64(target) * float64(pct) / 100)), nil
	}
	if v.IntVal < 1 {
		return target, fmt.Errorf("%d must be at least 1", v.IntVal)
	}
	return v.IntVal, nil
}
