package main

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/mailpush/mailpush"
)

// TestSystemdUnitVerifies checks deploy/mailpush.service with the real
// systemd-analyze (verify, and the offline security score), pointing
// ExecStart at an executable that exists here.
func TestSystemdUnitVerifies(t *testing.T) {
	analyze := requireBinary(t, "systemd-analyze")
	unit, err := os.ReadFile("../../deploy/mailpush.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DynamicUser=yes", "ProtectSystem=strict", "StateDirectory=mailpush", "NoNewPrivileges=yes", "CapabilityBoundingSet=\n", "ProtectHome=yes", "PrivateTmp=yes", "SystemCallFilter=@system-service", "MemoryDenyWriteExecute=yes"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit lacks %q", strings.TrimSpace(want))
		}
	}
	self, _ := os.Executable()
	path := filepath.Join(t.TempDir(), "mailpush.service")
	os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/mailpush", self)), 0o644)
	if out, err := exec.Command(analyze, "verify", path).CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err := exec.Command(analyze, "security", "--offline=true", path).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for mailpush.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	// 0 is fully sandboxed, 10 not at all; systemd calls up to 2 "OK".
	if level, _ := strconv.ParseFloat(string(m[1]), 64); level > 2 {
		t.Errorf("exposure level %s: the sandbox is too loose", m[1])
	}
}

// TestContainerfileLint checks deploy/Containerfile for what the issue
// asks: a static binary (CGO off, -trimpath), an empty final image (no
// shell: nothing is RUN in it), a numeric non-root user, exec-form
// ENTRYPOINT. No container builder runs here; this is the lint.
func TestContainerfileLint(t *testing.T) {
	b, err := os.ReadFile("../../deploy/Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	stages := regexp.MustCompile(`(?m)^FROM `).Split(string(b), -1)
	final := stages[len(stages)-1]
	build := strings.Join(stages[:len(stages)-1], "")
	if !strings.HasPrefix(final, "scratch") && !strings.Contains(strings.SplitN(final, "\n", 2)[0], "distroless/static") {
		t.Errorf("the final stage is %q: want scratch (no shell)", strings.SplitN(final, "\n", 2)[0])
	}
	if regexp.MustCompile(`(?m)^RUN `).MatchString(final) {
		t.Error("the final stage RUNs something: it has no shell to run it with")
	}
	if !strings.Contains(build, "CGO_ENABLED=0") || !strings.Contains(build, "-trimpath") {
		t.Error("the binary is not built static (CGO_ENABLED=0) and trimmed (-trimpath)")
	}
	user := regexp.MustCompile(`(?m)^USER (\d+)(:\d+)?$`).FindStringSubmatch(final)
	if user == nil || user[1] == "0" {
		t.Errorf("the final stage does not run as a numeric non-root USER: %v", user)
	}
	if !regexp.MustCompile(`(?m)^ENTRYPOINT \["/mailpush"\]$`).MatchString(final) {
		t.Error("ENTRYPOINT is not the exec form [\"/mailpush\"]")
	}
}

// TestPprofIsAdminOnlyAndLoopback: the profiler listens only where
// configured, only on loopback, and answers only admin-scope tokens.
func TestPprofIsAdminOnlyAndLoopback(t *testing.T) {
	if _, err := LoadConfig("", []string{"MAILPUSH_DEBUG_PPROF_LISTEN=0.0.0.0:6060"}); err == nil || !strings.Contains(err.Error(), "debug.pprofListen") {
		t.Errorf("a public pprof address: %v", err)
	}
	w := newWorldWith(t, "info", worldOptions{configure: func(c *Config) { c.Debug.PprofListen = "127.0.0.1:0" }})
	if w.main.pprofAddr == "" {
		t.Fatal("pprof did not start")
	}
	app := w.addTenant(t, "acme")
	admin := w.addToken(t, "acme", mailpush.ScopeAdmin)
	get := func(base, token string) int {
		req, _ := http.NewRequestWithContext(context.Background(), "GET", base+"/debug/pprof/goroutine?debug=1", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	pp := "http://" + w.main.pprofAddr
	for _, tc := range []struct {
		token string
		want  int
	}{{"", 401}, {"x.y", 401}, {app, 403}, {admin, 200}} {
		if st := get(pp, tc.token); st != tc.want {
			t.Errorf("pprof with %q = %d, want %d", tc.token, st, tc.want)
		}
	}
	if st := get(w.main.URL(), admin); st != 404 {
		t.Errorf("pprof on the public listener = %d, want 404", st)
	}
}
