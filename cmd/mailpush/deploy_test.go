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

// TestContainerfileLint checks deploy/Containerfile and the Makefile's
// image target for what the issue asks: a static binary (CGO off,
// -trimpath), an empty image (FROM scratch, one stage, nothing RUN: there
// is no shell), a numeric non-root user, exec-form ENTRYPOINT.
func TestContainerfileLint(t *testing.T) {
	b, err := os.ReadFile("../../deploy/Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	froms := regexp.MustCompile(`(?m)^FROM (.*)$`).FindAllStringSubmatch(string(b), -1)
	if len(froms) != 1 || froms[0][1] != "scratch" {
		t.Errorf("stages %v: want one, FROM scratch (no shell, nothing pulled)", froms)
	}
	if regexp.MustCompile(`(?m)^RUN `).MatchString(string(b)) {
		t.Error("the Containerfile RUNs something: the image has no shell to run it with")
	}
	mk, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	target := regexp.MustCompile(`(?ms)^image:\n(.*?)\n\n`).FindSubmatch(mk)
	if target == nil || !strings.Contains(string(target[1]), "CGO_ENABLED=0") || !strings.Contains(string(target[1]), "-trimpath") {
		t.Error("make image does not build the binary static (CGO_ENABLED=0) and trimmed (-trimpath)")
	}
	user := regexp.MustCompile(`(?m)^USER (\d+)(:\d+)?$`).FindStringSubmatch(string(b))
	if user == nil || user[1] == "0" {
		t.Errorf("the image does not run as a numeric non-root USER: %v", user)
	}
	if !regexp.MustCompile(`(?m)^ENTRYPOINT \["/mailpush"\]$`).MatchString(string(b)) {
		t.Error("ENTRYPOINT is not the exec form [\"/mailpush\"]")
	}
}

// TestContainerImageBuildsAndRuns builds the image with `make image` and
// buildah (rootful; .ci/run installs buildah) and runs `mailpush --help` in
// it. It runs with buildah's chroot isolation: the OCI runtime (crun)
// cannot create cgroups in this sandbox, and podman run lacks its network
// helper here (deploy/README.md).
func TestContainerImageBuildsAndRuns(t *testing.T) {
	buildah := requireBinary(t, "buildah")
	makeBin := requireBinary(t, "make")
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.json")
	// FROM scratch pulls nothing, so no signature is ever checked; buildah
	// still wants a policy file, which a fresh machine lacks.
	os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644)
	version := "test-" + strconv.Itoa(os.Getpid())
	image := "localhost/mailpush:" + version
	build := exec.Command(makeBin, "-C", "../..", "image", "BUILDER="+buildah, "BUILD_FLAGS=--signature-policy="+policy,
		"VERSION="+version, "IMAGE_DIR="+filepath.Join(dir, "context"))
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command(buildah, "rmi", "-f", image).Run() })
	out, err := exec.Command(buildah, "inspect", "--type", "image", "--format", "{{.OCIv1.Config.User}} {{.OCIv1.Config.Entrypoint}} {{.OCIv1.Config.Cmd}}", image).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "65532:65532 [/mailpush] [serve]" {
		t.Errorf("image config = %q, %v; want user 65532:65532, entrypoint [/mailpush], cmd [serve]", out, err)
	}
	name := "mailpush-test-" + strconv.Itoa(os.Getpid())
	if out, err := exec.Command(buildah, "--signature-policy", policy, "from", "--name", name, image).CombinedOutput(); err != nil {
		t.Fatalf("buildah from: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command(buildah, "rm", name).Run() })
	out, err = exec.Command(buildah, "run", "--isolation", "chroot", name, "--", "/mailpush", "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "serve") {
		t.Errorf("mailpush --help in the image: %v\n%s", err, out)
	}
	// No shell in the image.
	if out, err := exec.Command(buildah, "run", "--isolation", "chroot", name, "--", "/bin/sh", "-c", "true").CombinedOutput(); err == nil {
		t.Errorf("the image has a shell:\n%s", out)
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
