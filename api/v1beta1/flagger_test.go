package v1beta1

import (
	"bufio"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// flaggerField is a line of testdata/flagger-fields.txt.
type flaggerField struct{ kind, release string }

// flaggerFields reads testdata/flagger-fields.txt: "Kind.spec.path" -> its kind.
func flaggerFields(t *testing.T) map[string]flaggerField {
	t.Helper()
	f, err := os.Open("testdata/flagger-fields.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]flaggerField{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Fields(line)
		if len(parts) != 3 {
			t.Fatalf("flagger-fields.txt: malformed line %q", line)
		}
		out[parts[0]] = flaggerField{kind: parts[1], release: parts[2]}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) < 400 {
		t.Fatalf("flagger-fields.txt lists %d fields; expected the whole Flagger spec", len(out))
	}
	return out
}

// kindRaw is a node that keeps any JSON (x-kubernetes-preserve-unknown-fields): it
// declares its whole subtree.
const kindRaw = "raw"

var (
	rawType    = reflect.TypeOf(runtime.RawExtension{})
	intstrType = reflect.TypeOf(intstr.IntOrString{})
)

// goKind is the JSON kind of t, in flagger-fields.txt's words.
func goKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == rawType:
		return kindRaw
	case t == intstrType:
		return "int-or-string"
	case t.String() == "v1.Time":
		return "string"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice:
		return "array-of-" + baseKind(goKind(t.Elem()))
	case reflect.Map:
		return "map-of-" + baseKind(goKind(t.Elem()))
	case reflect.Struct:
		return "object"
	}
	return t.Kind().String()
}

// baseKind drops what a kind holds: array-of-string is an array.
func baseKind(k string) string {
	if i := strings.Index(k, "-of-"); i >= 0 {
		return k[:i]
	}
	return k
}

// goFields lists the JSON paths of t under prefix with their kinds, as flagger-fields.txt
// does (arrays unmarked, map values "*").
func goFields(prefix string, t reflect.Type, out map[string]string) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() == reflect.Map {
		goFields(prefix+".*", t.Elem(), out)
		return
	}
	if t.Kind() != reflect.Struct || goKind(t) != "object" {
		return
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name := strings.Split(f.Tag.Get("json"), ",")[0]
		if f.Anonymous && name == "" {
			goFields(prefix, f.Type, out)
			continue
		}
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		p := prefix + "." + name
		out[p] = goKind(f.Type)
		goFields(p, f.Type, out)
	}
}

// ours is every JSON path of the specs coalmine declares, as flagger-fields.txt names them.
func ours() map[string]string {
	out := map[string]string{}
	goFields("Canary.spec", reflect.TypeOf(CanarySpec{}), out)
	goFields("MetricTemplate.spec", reflect.TypeOf(MetricTemplateSpec{}), out)
	goFields("AlertProvider.spec", reflect.TypeOf(AlertProviderSpec{}), out)
	return out
}

// underRaw reports whether an ancestor of path is a raw node in decl.
func underRaw(decl map[string]string, path string) bool {
	for p := path; strings.Contains(p, "."); {
		p = p[:strings.LastIndex(p, ".")]
		if decl[p] == kindRaw {
			return true
		}
	}
	return false
}

// sameShape: a raw node takes any object; a map of arrays is Flagger's http.Header.
func sameShape(flagger, ours string) bool {
	if flagger == ours {
		return true
	}
	if ours == kindRaw {
		return flagger == "object" || strings.HasPrefix(flagger, "map-of-")
	}
	return false
}

// TestFlaggerFieldsDeclared: every field of Flagger's Canary, MetricTemplate and
// AlertProvider specs is declared, with Flagger's JSON name and shape, so the apiserver
// keeps it and coalmine either does it or refuses it by name.
func TestFlaggerFieldsDeclared(t *testing.T) {
	decl := ours()
	var missing, wrong []string
	for path, f := range flaggerFields(t) {
		got, ok := decl[path]
		switch {
		case ok && sameShape(f.kind, got):
		case ok:
			wrong = append(wrong, path+": Flagger's is "+f.kind+", ours "+got)
		case underRaw(decl, path):
		default:
			missing = append(missing, path+" ("+f.kind+", Flagger "+f.release+")")
		}
	}
	sort.Strings(missing)
	sort.Strings(wrong)
	for _, m := range missing {
		t.Errorf("not declared: %s", m)
	}
	for _, w := range wrong {
		t.Errorf("another shape: %s", w)
	}
}

// TestProviderHeadersShapes: headers are read in Flagger's shape and in coalmine's
// earlier one (objects stored before the change), and written in Flagger's.
func TestProviderHeadersShapes(t *testing.T) {
	for in, want := range map[string][]string{
		`{"X-Scope-OrgID":["a","b"]}`: {"a", "b"},
		`{"X-Scope-OrgID":"a"}`:       {"a"},
		`{"X-Scope-OrgID":7}`:         {"7"},
	} {
		var h ProviderHeaders
		if err := yaml.Unmarshal([]byte(in), &h); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if !reflect.DeepEqual(h["X-Scope-OrgID"], want) {
			t.Errorf("%s: got %q, want %q", in, h["X-Scope-OrgID"], want)
		}
	}
	out, err := yaml.Marshal(MetricTemplateProvider{Headers: ProviderHeaders{"X-Scope-OrgID": {"a"}}})
	if err != nil || !strings.Contains(string(out), "X-Scope-OrgID:\n  - a") {
		t.Errorf("headers are written as %q (%v), want Flagger's list shape", out, err)
	}
}

// migrationRow is a row of the README's "Migrating from Flagger" tables.
type migrationRow struct {
	kind, path, status, notes string
}

// migrationTable reads the rows of the README section "## Migrating from Flagger": each
// "### Canary" or "### MetricTemplate" table has rows "| `spec.x` | same | notes |".
func migrationTable(t *testing.T) []migrationRow {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var rows []migrationRow
	in, kind := false, ""
	for line := range strings.SplitSeq(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "## "):
			in = strings.TrimSpace(line) == "## Migrating from Flagger"
			continue
		case !in:
			continue
		case strings.HasPrefix(line, "### "):
			kind = strings.Fields(line)[1]
			continue
		case !strings.HasPrefix(line, "| `"):
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 3 {
			t.Fatalf("README migration table: malformed row %q", line)
		}
		path := strings.Trim(strings.TrimSpace(cells[0]), "`")
		rows = append(rows, migrationRow{kind: kind, path: path, status: strings.TrimSpace(cells[1]), notes: strings.TrimSpace(cells[2])})
	}
	if len(rows) == 0 {
		t.Fatal(`README.md has no "## Migrating from Flagger" table`)
	}
	return rows
}

// crdFields lists the paths of a generated CRD's spec (kind-prefixed, as in
// flagger-fields.txt), raw for a node that keeps unknown fields.
func crdFields(t *testing.T, file, kind string, out map[string]string) {
	t.Helper()
	b, err := os.ReadFile("../../manifests/crd/" + file)
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.Unmarshal(b, &crd); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var walk func(prefix string, s *apiextensionsv1.JSONSchemaProps)
	walk = func(prefix string, s *apiextensionsv1.JSONSchemaProps) {
		for s.Type == "array" && s.Items != nil && s.Items.Schema != nil {
			s = s.Items.Schema
		}
		if s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil {
			walk(prefix+".*", s.AdditionalProperties.Schema)
		}
		for name, p := range s.Properties {
			path := prefix + "." + name
			out[path] = p.Type
			if p.XPreserveUnknownFields != nil && *p.XPreserveUnknownFields {
				out[path] = kindRaw
			}
			walk(path, &p)
		}
	}
	spec := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"]
	walk(kind+".spec", &spec)
}

// covered reports whether path has a row, or is covered by its parent's: a row covers the
// fields under it unless the table details that object (has a row for one of its fields),
// in which case each of its fields needs a row of its own.
func covered(rows map[string]migrationRow, path string) bool {
	if _, ok := rows[path]; ok {
		return true
	}
	i := strings.LastIndex(path, ".")
	if i < 0 {
		return false
	}
	parent := path[:i]
	for key := range rows {
		if strings.HasPrefix(key, parent+".") && !strings.Contains(key[len(parent)+1:], ".") {
			return false // the parent is detailed: path needs its own row
		}
	}
	return covered(rows, parent)
}

// TestMigrationTableMatchesCRD keeps the README's migration table true: every row names
// a field of the generated CRD; every Flagger field is covered by its own row or an
// ancestor's; every field coalmine adds has an "extended" row; and the "refused" rows are
// exactly the fields UnsupportedFields refuses.
func TestMigrationTableMatchesCRD(t *testing.T) {
	crd := map[string]string{}
	crdFields(t, "coalmine.dev_canaries.yaml", "Canary", crd)
	crdFields(t, "coalmine.dev_metrictemplates.yaml", "MetricTemplate", crd)
	flagger := flaggerFields(t)

	rows := map[string]migrationRow{}
	for _, r := range migrationTable(t) {
		key := r.kind + "." + r.path
		switch r.status {
		case "same", "extended", "refused":
		default:
			t.Errorf("row %s: status %q, want same, extended or refused", key, r.status)
		}
		if r.notes == "" {
			t.Errorf("row %s: no notes", key)
		}
		if _, dup := rows[key]; dup {
			t.Errorf("row %s twice", key)
		}
		rows[key] = r
		if _, ok := crd[key]; !ok {
			t.Errorf("row %s: no such field in the CRD", key)
		}
	}

	for path := range flagger {
		if strings.HasPrefix(path, "AlertProvider.") {
			continue // a kind of its own, not in this table
		}
		if !covered(rows, path) {
			t.Errorf("Flagger field %s has no row (nor has a parent)", path)
		}
	}

	for path := range crd {
		if _, isFlagger := flagger[path]; isFlagger || underRaw(crd, path) {
			continue
		}
		parent := path[:strings.LastIndex(path, ".")]
		if _, ok := flagger[parent]; !ok && strings.Count(parent, ".") > 1 {
			continue // inside an extension: the extension's row covers it
		}
		if r, ok := rows[path]; !ok || r.status != "extended" {
			t.Errorf("coalmine field %s (not Flagger's) needs a row marked extended", path)
		}
	}

	refused := map[string]bool{}
	for _, r := range Refusals {
		if r.supported == nil {
			refused["Canary."+r.Path] = true
		}
	}
	for key, r := range rows {
		if (r.status == "refused") != refused[key] {
			t.Errorf("row %s says %s, but UnsupportedFields refusing it is %v", key, r.status, refused[key])
		}
	}
	for key := range refused {
		if _, ok := rows[key]; !ok {
			t.Errorf("refused field %s has no row", key)
		}
	}
}
