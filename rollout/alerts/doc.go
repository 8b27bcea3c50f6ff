// Package alerts posts a Canary's alerts (spec.analysis.alerts) to the AlertProviders they
// name, the way Flagger does: each provider type gets its own JSON payload (Slack, MS Teams,
// Discord, Rocket.Chat, Google Chat, and a generic webhook), an alert goes to every entry
// whose severity admits it, and a Canary without alerts uses the global provider of the
// command line (--slack-url, --msteams-url), if any.
//
// Sending never holds the progression loop: Notifier.Send resolves the provider (the
// AlertProvider from the cache, its Secret from the API server) and posts in the
// background, each post bounded by a timeout. A failure is logged, never retried: an alert
// is a notification, the Canary's status and Events stay the record.
//
// +kubebuilder:rbac:groups=coalmine.dev,resources=alertproviders,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
package alerts
