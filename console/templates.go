package console

import (
	"encoding/hex"
	"html/template"
	"path"
	"strings"
	"time"
)

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"hexshort": func(b []byte) string {
		if len(b) == 0 {
			return "—"
		}
		s := hex.EncodeToString(b)
		if len(s) > 16 {
			s = s[:16] + "…"
		}
		return s
	},
	"join": strings.Join,
}

// parseTemplates parses each page with the shared layout.
func parseTemplates() (map[string]*template.Template, error) {
	layout, err := template.New("layout").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, err
	}
	names, err := templateFS.ReadDir("templates")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, e := range names {
		if e.Name() == "layout.html" {
			continue
		}
		t, err := template.Must(layout.Clone()).ParseFS(templateFS, "templates/"+e.Name())
		if err != nil {
			return nil, err
		}
		pages[strings.TrimSuffix(e.Name(), path.Ext(e.Name()))] = t
	}
	return pages, nil
}
