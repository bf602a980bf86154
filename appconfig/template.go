package appconfig

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"unicode/utf8"
)

// BaseAttributes are the directory attributes every template may name; a
// tenant adds others with Options.Attributes.
var BaseAttributes = []string{"userPrincipalName", "sAMAccountName", "mail", "displayName"}

// MaxValueLen caps a template value and an expanded one.
const MaxValueLen = 16 << 10

// Template is a tenant's parsed app configuration: every key's value, with
// its macros resolved to the attributes or variables they name.
type Template struct {
	keys  []key
	attrs []string // directory attributes the macros read, canonical spelling
}

type key struct {
	name  string
	value any       // a bool, int64 or float64 (no macros), or nil for parts
	parts []segment // a string value
}

// segment is literal text, or a macro: a user attribute or a variable, with
// an optional default.
type segment struct {
	text       string // literal text, or the attribute / variable name
	macro      bool
	attr       bool // a user.<attribute>; else a variable (fixed at load)
	hasDefault bool
	def        string
}

// Options say what a template may name.
type Options struct {
	// Attributes are directory attributes beyond BaseAttributes.
	Attributes []string
	// Vars are the other macros, by name (e.g. "tenant.appToken"), with
	// their values; names are matched case-insensitively.
	Vars map[string]string
}

// Parse parses a template: keys to values, each a string (with macros), a
// bool or a number. Macros are ${user.<attribute>} and the names in
// opts.Vars, with spaces tolerated inside the braces (${ user.mail }),
// attribute names matched case-insensitively, and a default after ":-"
// (${user.mobile:-none}) used when the user has no such attribute. "$$"
// is a literal "$". An unknown macro, an unterminated one or a value of
// another type is an error naming the key.
func Parse(values map[string]any, opts Options) (*Template, error) {
	known := map[string]string{} // lower-case → canonical
	for _, a := range append(append([]string(nil), BaseAttributes...), opts.Attributes...) {
		if !validAttr(a) {
			return nil, fmt.Errorf("attributes: %q is not an LDAP attribute name", a)
		}
		known[strings.ToLower(a)] = a
	}
	vars := map[string]string{}
	for n, v := range opts.Vars {
		vars[strings.ToLower(n)] = v
	}
	names := make([]string, 0, len(values))
	for n := range values {
		names = append(names, n)
	}
	sort.Strings(names)
	t := &Template{}
	used := map[string]bool{}
	var errs []string
	for _, n := range names {
		if n == "" || len(n) > 256 || strings.HasPrefix(n, "_") {
			errs = append(errs, fmt.Sprintf("keys: a key name is 1 to 256 characters and does not start with _ (kept for the export's _user and _error columns): %q", n))
			continue
		}
		k := key{name: n}
		switch v := values[n].(type) {
		case bool:
			k.value = v
		case int:
			k.value = int64(v)
		case int64:
			k.value = v
		case uint64:
			if v > math.MaxInt64 {
				errs = append(errs, fmt.Sprintf("keys.%s: %d is too large", n, v))
				continue
			}
			k.value = int64(v)
		case float64:
			k.value = v
		case string:
			parts, err := parseValue(v, known, vars)
			if err != nil {
				errs = append(errs, fmt.Sprintf("keys.%s: %v", n, err))
				continue
			}
			for _, p := range parts {
				if p.attr && !used[p.text] {
					used[p.text] = true
					t.attrs = append(t.attrs, p.text)
				}
			}
			k.parts = parts
		default:
			errs = append(errs, fmt.Sprintf("keys.%s: values are strings, numbers or booleans, not %T", n, v))
			continue
		}
		t.keys = append(t.keys, k)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	sort.Strings(t.attrs)
	return t, nil
}

// parseValue splits a string value into literal text and macros.
func parseValue(s string, known, vars map[string]string) ([]segment, error) {
	if len(s) > MaxValueLen {
		return nil, fmt.Errorf("the value is longer than %d bytes", MaxValueLen)
	}
	var parts []segment
	var lit strings.Builder
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "$$"):
			lit.WriteByte('$')
			i += 2
			continue
		case !strings.HasPrefix(s[i:], "${"):
			lit.WriteByte(s[i])
			i++
			continue
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return nil, fmt.Errorf("unterminated macro %q: close it with }", clip(s[i:]))
		}
		body := s[i+2 : i+end]
		raw := s[i : i+end+1]
		i += end + 1
		name, def, hasDefault := strings.Cut(body, ":-")
		name = strings.TrimSpace(name)
		seg := segment{macro: true, hasDefault: hasDefault, def: strings.TrimSpace(def)}
		lower := strings.ToLower(name)
		if attr, ok := strings.CutPrefix(lower, "user."); ok {
			canon, ok := known[attr]
			if !ok {
				return nil, fmt.Errorf("unknown macro %s: user.%s is not an attribute of this template (known: %s; add it to attributes)",
					raw, name[len("user."):], strings.Join(sortedValues(known), ", "))
			}
			seg.text, seg.attr = canon, true
		} else if v, ok := vars[lower]; ok {
			lit.WriteString(v) // a variable is fixed at load: literal text from now on
			continue
		} else {
			return nil, fmt.Errorf("unknown macro %s: use ${user.<attribute>}%s", raw, varsHint(vars))
		}
		if lit.Len() > 0 {
			parts = append(parts, segment{text: lit.String()})
			lit.Reset()
		}
		parts = append(parts, seg)
	}
	if lit.Len() > 0 || len(parts) == 0 {
		parts = append(parts, segment{text: lit.String()})
	}
	return parts, nil
}

func varsHint(vars map[string]string) string {
	if len(vars) == 0 {
		return ""
	}
	names := make([]string, 0, len(vars))
	for n := range vars {
		names = append(names, "${"+n+"}")
	}
	sort.Strings(names)
	return " or one of " + strings.Join(names, ", ")
}

func sortedValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// validAttr reports whether a is an LDAP attribute description
// (RFC 4512 descr: a letter, then letters, digits and hyphens).
func validAttr(a string) bool {
	if a == "" || len(a) > 128 {
		return false
	}
	for i, r := range a {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case i > 0 && (r >= '0' && r <= '9' || r == '-'):
		default:
			return false
		}
	}
	return true
}

// Attributes are the directory attributes the template reads.
func (t *Template) Attributes() []string { return append([]string(nil), t.attrs...) }

// MissingError says a user lacks an attribute a macro needs, and the macro
// has no default.
type MissingError struct {
	Key, Attribute string
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("the user has no %s attribute, which key %s needs; give the macro a default such as ${user.%s:-none}", e.Attribute, e.Key, e.Attribute)
}

// Expand fills the template for one user; attr returns the user's value of
// an attribute (its first, as text) and whether there is one. A missing
// attribute takes the macro's default; without one Expand fails with a
// *MissingError. Values that are not UTF-8 count as missing: app
// configuration is text.
func (t *Template) Expand(attr func(name string) (string, bool)) ([]KeyValue, error) {
	out := make([]KeyValue, 0, len(t.keys))
	for _, k := range t.keys {
		if k.parts == nil {
			out = append(out, KeyValue{Key: k.name, Value: k.value})
			continue
		}
		var b strings.Builder
		for _, p := range k.parts {
			if !p.macro {
				b.WriteString(p.text)
				continue
			}
			v, ok := attr(p.text)
			if ok && !utf8.ValidString(v) {
				ok = false
			}
			switch {
			case ok:
				b.WriteString(v)
			case p.hasDefault:
				b.WriteString(p.def)
			default:
				return nil, &MissingError{Key: k.name, Attribute: p.text}
			}
			if b.Len() > MaxValueLen {
				return nil, fmt.Errorf("key %s expands to more than %d bytes", k.name, MaxValueLen)
			}
		}
		out = append(out, KeyValue{Key: k.name, Value: b.String()})
	}
	return out, nil
}

// KeyValue is one expanded key.
type KeyValue struct {
	Key   string
	Value any // string, bool, int64 or float64
}
