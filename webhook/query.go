package webhook

import (
	"fmt"
	"text/template"
	"text/template/parse"

	"github.com/prometheus/prometheus/promql/parser"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// queryVars and renderQuery are the shared query renderer of api/v1beta1, non-strict:
// admission renders sample values, and a variable the sample lacks renders empty.
type queryVars = v1beta1.QueryVars

func renderQuery(tmpl string, vars queryVars) (string, error) {
	return v1beta1.RenderQuery(tmpl, vars, false)
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
	t, err := v1beta1.ParseQueryTemplate(tmpl, sampleVars, false)
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
