package main

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// checkYAML walks a parsed YAML document against the Go type it will be
// decoded into, before any decoding, so that every mistake is reported the
// way an admin reads it: the line, the full key path, what was expected,
// and for a misspelled key the closest known one. yaml.v3's own errors name
// Go types ("field lsiten not found in type main.Config") or dump whole
// structs; this is why the file is checked first and decoded only when it
// is clean.
func checkYAML(file string, doc *yaml.Node, t reflect.Type) []error {
	c := &yamlChecker{file: file}
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil
		}
		doc = doc.Content[0]
	}
	c.check(doc, t, "")
	return c.errs
}

type yamlChecker struct {
	file string
	errs []error
}

func (c *yamlChecker) fail(n *yaml.Node, path, format string, args ...any) {
	key := path
	if key == "" {
		key = "(top level)"
	}
	c.errs = append(c.errs, fmt.Errorf("config %s line %d: %s: %s", c.file, n.Line, key, fmt.Sprintf(format, args...)))
}

var durationType = reflect.TypeFor[time.Duration]()

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (c *yamlChecker) check(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty value keeps the default
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == durationType:
		if !c.scalar(n, path, "a duration such as 720h, 90s or 1h30m") {
			return
		}
		if _, err := time.ParseDuration(n.Value); err != nil {
			c.fail(n, path, "expected a duration such as 720h, 90s or 1h30m (units ns, us, ms, s, m, h), got %q", n.Value)
		}
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			c.fail(n, path, "expected a mapping with keys %s, got %s", strings.Join(structKeys(t), ", "), describe(n))
			return
		}
		fields := map[string]reflect.Type{}
		for i := range t.NumField() {
			if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); tag != "" && tag != "-" {
				fields[tag] = t.Field(i).Type
			}
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			ft, ok := fields[k.Value]
			switch {
			case !ok:
				c.unknown(k, path, structKeys(t))
			case seen[k.Value]:
				c.fail(k, join(path, k.Value), "is set twice")
			default:
				c.check(v, ft, join(path, k.Value))
			}
			seen[k.Value] = true
		}
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			c.fail(n, path, "expected a mapping of names to settings, got %s", describe(n))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			c.check(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value))
		}
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			c.fail(n, path, "expected a list (for example [a, b]), got %s", describe(n))
			return
		}
		for i, e := range n.Content {
			c.check(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case t.Kind() == reflect.Int:
		if c.scalar(n, path, "a whole number") {
			if _, err := strconv.Atoi(n.Value); err != nil || n.Tag != "!!int" {
				c.fail(n, path, "expected a whole number, got %q", n.Value)
			}
		}
	case t.Kind() == reflect.Bool:
		if c.scalar(n, path, "true or false") && n.Tag != "!!bool" {
			c.fail(n, path, "expected true or false, got %q", n.Value)
		}
	case t.Kind() == reflect.String:
		c.scalar(n, path, "a string")
	}
}

func (c *yamlChecker) scalar(n *yaml.Node, path, want string) bool {
	if n.Kind != yaml.ScalarNode {
		c.fail(n, path, "expected %s, got %s", want, describe(n))
		return false
	}
	return true
}

func (c *yamlChecker) unknown(k *yaml.Node, path string, known []string) {
	if best := closest(k.Value, known); best != "" {
		c.fail(k, join(path, k.Value), "unknown key; did you mean `%s`?", join(path, best))
		return
	}
	c.fail(k, join(path, k.Value), "unknown key; the keys here are %s", strings.Join(known, ", "))
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}

func structKeys(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); tag != "" && tag != "-" {
			keys = append(keys, tag)
		}
	}
	sort.Strings(keys)
	return keys
}

// closest returns the candidate nearest to s (case-insensitive edit
// distance), or "" when none is close enough to be a plausible typo.
func closest(s string, candidates []string) string {
	best, bestD := "", 0
	for _, c := range candidates {
		d := editDistance(strings.ToLower(s), strings.ToLower(c))
		if best == "" || d < bestD {
			best, bestD = c, d
		}
	}
	if best == "" || bestD > max(2, len(s)/3) {
		return ""
	}
	return best
}

// editDistance is the Damerau–Levenshtein (optimal string alignment)
// distance, so that a swapped pair ("lsiten") counts as one typo.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range rb {
		d[0][j+1] = j + 1
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}
