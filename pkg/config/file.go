package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// fileConfig is the configuration file as written. Addresses and ranges are
// strings here so that validate can report an invalid one by its field path.
type fileConfig struct {
	NodeName       string          `yaml:"nodeName"`
	ClusterCIDR    string          `yaml:"clusterCIDR"`
	Device         string          `yaml:"device"`
	NodeIP         string          `yaml:"nodeIP"`
	AttachMode     string          `yaml:"attachMode"`
	PodAttachMode  string          `yaml:"podAttachMode"`
	Nodes          []fileNode      `yaml:"nodes"`
	Kubernetes     *fileKubernetes `yaml:"kubernetes"`
	Masquerade     fileMasquerade  `yaml:"masquerade"`
	BPFFSDir       string          `yaml:"bpffsDir"`
	CNI            fileCNI         `yaml:"cni"`
	MetricsAddress string          `yaml:"metricsAddress"`

	// kubernetesNull records a kubernetes key without a value, which YAML
	// reads as no section at all.
	kubernetesNull bool
}

type fileNode struct {
	Name    string `yaml:"name"`
	IP      string `yaml:"ip"`
	PodCIDR string `yaml:"podCIDR"`
}

type fileKubernetes struct {
	Kubeconfig string `yaml:"kubeconfig"`
}

type fileMasquerade struct {
	Enabled      *bool           `yaml:"enabled"`
	ExcludeCIDRs []string        `yaml:"excludeCIDRs"`
	NATTableSize *int64          `yaml:"natTableSize"`
	PortRange    string          `yaml:"portRange"`
	Timeouts     fileNATTimeouts `yaml:"timeouts"`
}

type fileCNI struct {
	ConfDir     string `yaml:"confDir"`
	BinDir      string `yaml:"binDir"`
	ConfName    string `yaml:"confName"`
	IPAMDataDir string `yaml:"ipamDataDir"`
}

// sections describes the mappings of the file for messages about unknown or
// mistyped fields, keyed by the type name that yaml's errors contain.
var sections = map[string]struct {
	typ  reflect.Type
	name string
}{
	"config.fileConfig":      {reflect.TypeFor[fileConfig](), "the top level"},
	"config.fileNode":        {reflect.TypeFor[fileNode](), "a nodes entry"},
	"config.fileKubernetes":  {reflect.TypeFor[fileKubernetes](), "kubernetes"},
	"config.fileMasquerade":  {reflect.TypeFor[fileMasquerade](), "masquerade"},
	"config.fileNATTimeouts": {reflect.TypeFor[fileNATTimeouts](), "masquerade.timeouts"},
	"config.fileCNI":         {reflect.TypeFor[fileCNI](), "cni"},
}

// decode parses data into a fileConfig, rejecting unknown fields. It returns
// ok false when the problems leave nothing that validation could check, as
// after a syntax error or a value of the wrong type.
func decode(data []byte) (fileConfig, []Problem, bool) {
	var raw fileConfig
	var tree yaml.Node
	if err := yaml.Unmarshal(data, &tree); err != nil {
		return raw, []Problem{{Message: "invalid YAML: " + trimYAMLPrefix(err.Error())}}, false
	}

	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(&raw)
	if errors.Is(err, io.EOF) {
		// An empty file: validation reports the missing settings.
		return raw, nil, true
	}
	var ps []Problem
	ok := true
	var typeErr *yaml.TypeError
	switch {
	case errors.As(err, &typeErr):
		paths := newPathIndex(&tree)
		for _, msg := range typeErr.Errors {
			p, unknownField := translateTypeError(msg, paths)
			ps = append(ps, p)
			// Unknown fields leave the rest of the file intact; a value of the
			// wrong type leaves a zero value that validation would misreport.
			ok = ok && unknownField
		}
	case err != nil:
		return raw, []Problem{{Message: "invalid YAML: " + trimYAMLPrefix(err.Error())}}, false
	}

	raw.kubernetesNull = nullKey(&tree, "kubernetes")

	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		ps = append(ps, Problem{
			Message: "the file contains more than one YAML document: keep only the first",
		})
		ok = false
	}
	return raw, ps, ok
}

// nullKey reports whether the top-level mapping of the document tree has key
// with an empty (null) value.
func nullKey(tree *yaml.Node, key string) bool {
	if tree.Kind != yaml.DocumentNode || len(tree.Content) == 0 {
		return false
	}
	m := tree.Content[0]
	if m.Kind != yaml.MappingNode {
		return false
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1].Tag == "!!null"
		}
	}
	return false
}

func trimYAMLPrefix(msg string) string { return strings.TrimPrefix(msg, "yaml: ") }

var (
	unknownFieldRE = regexp.MustCompile(`^line (\d+): field (.+) not found in type (\S+)$`)
	wrongTypeRE    = regexp.MustCompile("^line (\\d+): cannot unmarshal (!!\\w+)(?: `(.*)`)? into (\\S+)$")
)

// translateTypeError rewrites one of yaml's type errors into a Problem that
// names the field path and uses no Go type names. unknownField reports
// whether the error was an unknown field.
func translateTypeError(msg string, paths pathIndex) (p Problem, unknownField bool) {
	if m := unknownFieldRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		key := m[2]
		section, known := sections[m[3]]
		field := paths.key(line, key)
		if field == "" {
			field = key
		}
		if !known {
			return Problem{Field: field, Message: fmt.Sprintf("unknown field (line %d)", line)}, true
		}
		keys := yamlKeys(section.typ)
		for _, k := range keys {
			if strings.EqualFold(k, key) {
				return Problem{Field: field, Message: fmt.Sprintf(
					"unknown field (line %d): did you mean %q? Keys are case-sensitive", line, k)}, true
			}
		}
		return Problem{Field: field, Message: fmt.Sprintf(
			"unknown field (line %d): the fields of %s are %s", line, section.name,
			strings.Join(keys, ", "))}, true
	}

	if m := wrongTypeRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		var value string
		switch {
		case m[2] == "!!seq":
			value = "a list"
		case m[2] == "!!map":
			value = "a mapping"
		default:
			value = strconv.Quote(m[3])
		}
		text := fmt.Sprintf("invalid value %s (line %d): want %s", value, line, describeType(m[4]))
		return Problem{Field: paths.value(line, m[2]), Message: text}, false
	}
	return Problem{Message: "invalid YAML: " + msg}, false
}

// describeType names a Go type of fileConfig in the words of YAML.
func describeType(goType string) string {
	switch goType {
	case "string":
		return "a string"
	case "int64":
		return "an integer"
	case "bool":
		return "true or false"
	case "[]string":
		return "a list of strings"
	case "[]config.fileNode":
		return "a list of nodes, each a mapping with name, ip and podCIDR"
	}
	if s, ok := sections[goType]; ok {
		return fmt.Sprintf("a mapping with the fields %s", strings.Join(yamlKeys(s.typ), ", "))
	}
	return goType
}

func yamlKeys(t reflect.Type) []string {
	keys := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		tag := t.Field(i).Tag.Get("yaml")
		keys = append(keys, strings.Split(tag, ",")[0])
	}
	return keys
}

// pathIndex finds the field path of a key or value by its line, since yaml's
// type errors name only the line.
type pathIndex struct {
	keys   map[lineKey]string
	values map[int][]valueRef
}

type lineKey struct {
	line int
	key  string
}

// valueRef is a value's path and YAML tag, such as !!str or !!seq.
type valueRef struct {
	path string
	tag  string
}

func newPathIndex(doc *yaml.Node) pathIndex {
	idx := pathIndex{keys: map[lineKey]string{}, values: map[int][]valueRef{}}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		idx.walk(doc.Content[0], "", 0)
	}
	return idx
}

// maxPathDepth bounds the walk, which only needs the depth of fileConfig.
const maxPathDepth = 8

func (idx pathIndex) walk(n *yaml.Node, path string, depth int) {
	if depth > maxPathDepth {
		return
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			idx.keys[lineKey{k.Line, k.Value}] = p
			idx.addValue(v, p)
			idx.walk(v, p, depth+1)
		}
	case yaml.SequenceNode:
		for i, v := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			idx.addValue(v, p)
			idx.walk(v, p, depth+1)
		}
	}
}

func (idx pathIndex) addValue(n *yaml.Node, path string) {
	idx.values[n.Line] = append(idx.values[n.Line], valueRef{path: path, tag: n.ShortTag()})
}

func (idx pathIndex) key(line int, key string) string { return idx.keys[lineKey{line, key}] }

// value returns the path of the value with the given tag on line, or "" when
// the line has no such value or several unrelated ones, as a flow mapping
// like {name: a, ip: b} has.
func (idx pathIndex) value(line int, tag string) string {
	var paths []string
	for _, v := range idx.values[line] {
		if v.tag == tag {
			paths = append(paths, v.path)
		}
	}
	if len(paths) == 0 {
		return ""
	}
	// A value nested in another of the same tag on one line, such as
	// nodes[0] in nodes: [[x]], is the one that yaml reports: the deepest.
	sort.Slice(paths, func(i, j int) bool { return len(paths[i]) < len(paths[j]) })
	deepest := paths[len(paths)-1]
	for _, p := range paths[:len(paths)-1] {
		if !strings.HasPrefix(deepest, p) {
			return ""
		}
	}
	return deepest
}
