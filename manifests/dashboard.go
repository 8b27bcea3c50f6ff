package manifests

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// DashboardQuery is one PromQL query of the Grafana dashboard: a panel's target or a
// template variable's label_values() selector.
type DashboardQuery struct {
	Panel string // the panel's title, or "variable <name>"
	RefID string
	Expr  string
	// Instant is a target Grafana runs as an instant query (a stat panel's "now").
	Instant bool
}

// DashboardVariables are the template variables the dashboard declares (datasource
// included).
func DashboardVariables(dashboard []byte) ([]string, error) {
	var d struct {
		Templating struct {
			List []struct {
				Name string `json:"name"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(dashboard, &d); err != nil {
		return nil, fmt.Errorf("read dashboard: %w", err)
	}
	var out []string
	for _, v := range d.Templating.List {
		out = append(out, v.Name)
	}
	return out, nil
}

// DashboardQueries lists every query of a dashboard: its panels' targets (rows' nested
// panels too) and the selectors of its label_values() variables.
func DashboardQueries(dashboard []byte) ([]DashboardQuery, error) {
	type target struct {
		Expr    string `json:"expr"`
		RefID   string `json:"refId"`
		Instant bool   `json:"instant"`
	}
	type panel struct {
		Title   string   `json:"title"`
		Targets []target `json:"targets"`
		Panels  []panel  `json:"panels"`
	}
	var d struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(dashboard, &d); err != nil {
		return nil, fmt.Errorf("read dashboard: %w", err)
	}
	var out []DashboardQuery
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, t := range p.Targets {
				out = append(out, DashboardQuery{Panel: p.Title, RefID: t.RefID, Expr: t.Expr, Instant: t.Instant})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := ""
		switch x := v.Query.(type) {
		case string:
			q = x
		case map[string]any:
			q, _ = x["query"].(string)
		}
		sel, ok := LabelValuesSelector(q)
		if !ok {
			return nil, fmt.Errorf("variable %s: query %q is not label_values(<selector>, <label>)", v.Name, q)
		}
		out = append(out, DashboardQuery{Panel: "variable " + v.Name, RefID: v.Name, Expr: sel, Instant: true})
	}
	return out, nil
}

var labelValues = regexp.MustCompile(`^\s*label_values\(\s*(.+?)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$`)

// LabelValuesSelector is the series selector of Grafana's label_values(selector, label).
func LabelValuesSelector(q string) (string, bool) {
	m := labelValues.FindStringSubmatch(q)
	if m == nil {
		return "", false
	}
	return m[1], true
}

var grafanaVariable = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)(?::[a-z]+)?\}|\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+)\]\]`)

// ExpandVariables replaces Grafana's variable references ($x, ${x}, [[x]]) in q with
// values, as Grafana does before it sends a query; it reports the variables q uses that
// values lacks.
func ExpandVariables(q string, values map[string]string) (string, []string) {
	missing := map[string]bool{}
	out := grafanaVariable.ReplaceAllStringFunc(q, func(ref string) string {
		m := grafanaVariable.FindStringSubmatch(ref)
		name := m[1] + m[2] + m[3]
		v, ok := values[name]
		if !ok {
			missing[name] = true
			return ref
		}
		return v
	})
	var names []string
	for n := range missing {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.TrimSpace(out), names
}
