package mailpush_test

import (
	"go/build"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAdaptersDoNotImportEachOther enforces the layout of DESIGN.md: adapter
// packages import the domain (and the standard library or third-party
// libraries), never another package of this module; only cmd/ wires them.
// Test-support packages (storetest, dovecot/dovecottest: any package named
// …test, like net/http/httptest) and the fakes may import what they test.
// Packages under internal/ are code that some adapters share (the two
// stores' shared statements): they may be imported, and import only the
// domain themselves.
func TestAdaptersDoNotImportEachOther(t *testing.T) {
	const module = "github.com/mailpush/mailpush"
	allowed := map[string]bool{module: true}
	checked := 0
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		if path == "." {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || strings.HasPrefix(path, "cmd") || strings.HasPrefix(path, "fake") || strings.HasSuffix(d.Name(), "test") || path == "docs" {
			return filepath.SkipDir
		}
		pkg, err := build.ImportDir(path, 0)
		if err != nil {
			if _, ok := err.(*build.NoGoError); ok {
				return nil
			}
			return err
		}
		checked++
		for _, imp := range pkg.Imports {
			if strings.HasPrefix(imp, module+"/") && !allowed[imp] && !strings.HasPrefix(imp, module+"/internal/") {
				t.Errorf("%s imports %s: adapters import only the domain package; wire them in cmd/mailpush", path, imp)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 6 {
		t.Errorf("checked only %d packages: the walk is broken", checked)
	}
}
