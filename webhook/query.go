package webhook

import (
	"fmt"
	"strings"
	"text/template"
	"text/template/parse"

	"github.com/prometheus/prometheus/promql/parser"
)

// queryVars are the values of a MetricTemplate query's functions, as Flagger names them:
// {{ name }}, {{ namespace }}, {{ target }}, {{ service }}, {{ interval }} and
// {{ variables.key }}.
//
// This is the validation copy of the loop's renderer (rollout/analysis), which the webhook
// may not import. It belongs in api/v1beta1 so both use one; until it moves there, keep
// the function set of both in step.
type queryVars struct {
	Name, Namespace, Target, Service, Interval string
	Variables                                  map[string]string
}

// renderQuery executes tmpl with vars. A variable the map lacks renders empty.
func renderQuery(tmpl string, vars queryVars) (string, error) {
	t, err := parseQueryTemplate(tmpl, vars)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if err := t.Execute(&b, nil); err != nil {
		return "", fmt.Errorf("render query template: %w", err)
	}
	return b.String(), nil
}

func parseQueryTemplate(tmpl string, vars queryVars) (*template.Template, error) {
	str := func(s string) func() string { return func() string { return s } }
	t, err := template.New("query").Option("missingkey=zero").Funcs(template.FuncMap{
		"name":      str(vars.Name),
		"namespace": str(vars.Namespace),
		"target":    str(vars.Target),
		"service":   str(vars.Service),
		"interval":  str(vars.Interval),
		"variables": func() map[string]string { return vars.Variables },
	}).Parse(tmpl)
	if err != nil {
		return nil, fmt.Errorf("parse query template: %w", err)
	}
	return t, nil
}

// Sample values a query is rendered with before PromQL parses it. A variable can stand
// for a label value, a range or a number, so each filler is tried in turn and the query
// is accepted when one of them parses.
var (
	sampleVars = queryVars{
		Name: "sample", Namespace: "sample-ns", Target: "sample", Service: "sample", Interval: "1m",
	}
	variableFillers = []string{"sample", "1m", "1"}
)

// checkQuery renders tmpl with sample values and parses the result as PromQL.
func checkQuery(tmpl string) error {
	t, err := parseQueryTemplate(tmpl, sampleVars)
	if err != nil {
		return err
	}
	keys := variableKeys(t)
	var firstErr error
	for _, filler := range variableFillers {
		vars := sampleVars
		vars.Variables = make(map[string]string, len(keys))
		for _, k := range keys {
			vars.Variables[k] = filler
		}
		q, err := renderQuery(tmpl, vars)
		if err != nil {
			return err // does not depend on the filler
		}
		if _, err := parser.NewParser(parser.Options{}).ParseExpr(q); err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("PromQL does not parse after templating with sample values (target %q, namespace %q, interval %q, variables %q): %w",
					sampleVars.Target, sampleVars.Namespace, sampleVars.Interval, filler, err)
			}
			if len(keys) == 0 {
				break
			}
			continue
		}
		return nil
	}
	return firstErr
}

// variableKeys lists the keys of {{ variables.key }} references in t.
func variableKeys(t *template.Template) []string {
	seen := map[string]bool{}
	var keys []string
	var walk func(n parse.Node)
	walk = func(n parse.Node) {
		switch n := n.(type) {
		case *parse.ListNode:
			if n == nil {
				return
			}
			for _, c := range n.Nodes {
				walk(c)
			}
		case *parse.ActionNode:
			walk(n.Pipe)
		case *parse.PipeNode:
			if n == nil {
				return
			}
			for _, c := range n.Cmds {
				walk(c)
			}
		case *parse.CommandNode:
			for _, a := range n.Args {
				walk(a)
			}
		case *parse.ChainNode:
			if id, ok := n.Node.(*parse.IdentifierNode); ok && id.Ident == "variables" && len(n.Field) > 0 {
				if k := n.Field[0]; !seen[k] {
					seen[k] = true
					keys = append(keys, k)
				}
			}
			walk(n.Node)
		case *parse.IfNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *parse.RangeNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *parse.WithNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *parse.TemplateNode:
			walk(n.Pipe)
		}
	}
	for _, tt := range t.Templates() {
		if tt.Tree != nil {
			walk(tt.Tree.Root)
		}
	}
	return keys
}
