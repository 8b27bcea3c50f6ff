package alerts

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"strings"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// Field is one name/value line of an alert (Target, Failed checks threshold, Cluster ...).
type Field struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Alert is what is posted: about which Canary, how severe, the text and its fields.
type Alert struct {
	// Canary and Namespace name the Canary; providers show "<canary>.<namespace>".
	Canary    string
	Namespace string
	Message   string
	Severity  v1beta1.AlertSeverity
	Fields    []Field
	// Phase and Revision are the Canary's phase and the revision under analysis; only the
	// generic payload carries them.
	Phase    v1beta1.CanaryPhase
	Revision string
}

// Defaults of a provider without channel or username (Flagger: general, and its own name).
const (
	DefaultChannel  = "general"
	DefaultUsername = "coalmine"
)

// Provider is a resolved AlertProvider: its type and where and as whom it posts.
type Provider struct {
	Type     string
	Address  string
	Token    string
	Proxy    string
	Username string
	Channel  string
}

// request is one HTTP call of a provider: address, JSON body and bearer token.
type request struct {
	address string
	body    any
	token   string
}

// build checks p and returns the call that posts a.
func (p Provider) build(a Alert) (request, error) {
	if p.Address == "" {
		return request{}, errors.New("no address")
	}
	u, err := url.ParseRequestURI(p.Address)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return request{}, fmt.Errorf("address is not an http(s) URL")
	}
	if p.Proxy != "" {
		if pu, err := url.Parse(p.Proxy); err != nil || pu.Host == "" {
			return request{}, fmt.Errorf("proxy %q is not a URL", p.Proxy)
		}
	}
	if p.Username == "" {
		p.Username = DefaultUsername
	}
	if p.Channel == "" {
		p.Channel = DefaultChannel
	}
	who := a.Canary + "." + a.Namespace
	switch p.Type {
	case v1beta1.AlertProviderSlack:
		return request{address: p.Address, body: slackPayload(p, a, who, "good", "danger"), token: p.Token}, nil
	case v1beta1.AlertProviderDiscord:
		// Discord takes Slack's payload at the webhook's /slack path.
		if !strings.HasSuffix(u.Path, "/slack") {
			u.Path = path.Join(u.Path, "slack")
		}
		return request{address: u.String(), body: slackPayload(p, a, who, "good", "danger")}, nil
	case v1beta1.AlertProviderRocket:
		return request{address: p.Address, body: slackPayload(p, a, who, "#0076D7", "#FF0000")}, nil
	case v1beta1.AlertProviderMSTeams:
		return request{address: p.Address, body: teamsPayload(a, who)}, nil
	case v1beta1.AlertProviderGChat:
		return request{address: p.Address, body: gchatPayload(a, who)}, nil
	case v1beta1.AlertProviderGeneric:
		return request{address: p.Address, body: genericPayload(a), token: p.Token}, nil
	default:
		return request{}, fmt.Errorf("type %q is not supported: use slack, msteams, discord, rocket, gchat or generic", p.Type)
	}
}

// Slack's incoming-webhook message with one attachment (Discord and Rocket.Chat read it too).
type slackMessage struct {
	Channel     string            `json:"channel"`
	Username    string            `json:"username"`
	IconURL     string            `json:"icon_url"`
	IconEmoji   string            `json:"icon_emoji"`
	Text        string            `json:"text,omitempty"`
	Attachments []slackAttachment `json:"attachments,omitempty"`
}

type slackAttachment struct {
	Color      string       `json:"color"`
	AuthorName string       `json:"author_name"`
	Text       string       `json:"text"`
	MrkdwnIn   []string     `json:"mrkdwn_in"`
	Fields     []slackField `json:"fields"`
}

type slackField struct {
	Title string `json:"title"`
	Value string `json:"value"`
	Short bool   `json:"short"`
}

// slackPayload colours an error alert with bad, anything else with ok.
func slackPayload(p Provider, a Alert, who, ok, bad string) slackMessage {
	color := ok
	if a.Severity == v1beta1.SeverityError {
		color = bad
	}
	fields := make([]slackField, 0, len(a.Fields))
	for _, f := range a.Fields {
		fields = append(fields, slackField{Title: f.Name, Value: f.Value})
	}
	return slackMessage{
		Channel:   p.Channel,
		Username:  p.Username,
		IconEmoji: ":rocket:",
		Attachments: []slackAttachment{{
			Color: color, AuthorName: who, Text: a.Message, MrkdwnIn: []string{"text"}, Fields: fields,
		}},
	}
}

// MS Teams' connector MessageCard.
type teamsCard struct {
	Type       string         `json:"@type"`
	Context    string         `json:"@context"`
	ThemeColor string         `json:"themeColor"`
	Summary    string         `json:"summary"`
	Sections   []teamsSection `json:"sections"`
}

type teamsSection struct {
	ActivityTitle    string  `json:"activityTitle"`
	ActivitySubtitle string  `json:"activitySubtitle"`
	Facts            []Field `json:"facts"`
}

func teamsPayload(a Alert, who string) teamsCard {
	color := "0076D7"
	if a.Severity == v1beta1.SeverityError {
		color = "FF0000"
	}
	facts := append([]Field{}, a.Fields...)
	return teamsCard{
		Type: "MessageCard", Context: "http://schema.org/extensions", ThemeColor: color, Summary: who,
		Sections: []teamsSection{{ActivityTitle: a.Message, ActivitySubtitle: who, Facts: facts}},
	}
}

// Google Chat's card message: a header, then one text section for the message and one per
// field.
type gchatMessage struct {
	Cards []gchatCard `json:"cards"`
}

type gchatCard struct {
	Header   gchatHeader    `json:"header"`
	Sections []gchatSection `json:"sections"`
}

type gchatHeader struct {
	Title    string `json:"title"`
	SubTitle string `json:"subtitle"`
	ImageURL string `json:"imageUrl,omitempty"`
}

type gchatSection struct {
	Widgets []gchatWidget `json:"widgets"`
}

type gchatWidget struct {
	TextParagraph gchatText `json:"textParagraph"`
}

type gchatText struct {
	Text string `json:"text"`
}

func gchatPayload(a Alert, who string) gchatMessage {
	text := func(s string) gchatSection {
		return gchatSection{Widgets: []gchatWidget{{TextParagraph: gchatText{Text: s}}}}
	}
	sections := []gchatSection{text("<font color=#848484><strong>" + a.Message + "</strong></font>")}
	for _, f := range a.Fields {
		sections = append(sections, text(f.Name+"<br><font color=#848484><strong>"+f.Value+"</strong></font>"))
	}
	return gchatMessage{Cards: []gchatCard{{Header: gchatHeader{Title: "coalmine", SubTitle: who}, Sections: sections}}}
}

// GenericPayload is the body of a generic provider (a coalmine extension): everything an
// alert says, as plain JSON.
type GenericPayload struct {
	Name      string                `json:"name"`
	Namespace string                `json:"namespace"`
	Severity  v1beta1.AlertSeverity `json:"severity"`
	Message   string                `json:"message"`
	Phase     v1beta1.CanaryPhase   `json:"phase,omitempty"`
	Revision  string                `json:"revision,omitempty"`
	Fields    []Field               `json:"fields,omitempty"`
}

func genericPayload(a Alert) GenericPayload {
	return GenericPayload{
		Name: a.Canary, Namespace: a.Namespace, Severity: a.Severity, Message: a.Message,
		Phase: a.Phase, Revision: a.Revision, Fields: a.Fields,
	}
}
