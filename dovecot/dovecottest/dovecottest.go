// Package dovecottest runs a real Dovecot (Debian's dovecot-imapd,
// dovecot-lmtpd and dovecot-auth-lua) for tests: its own configuration in a
// temporary directory, IMAP and LMTP on loopback ports, mailpush's push
// configuration (dovecot.ConfigSnippet and dovecot.LuaScript, the files the
// docs tell admins to copy) pointed at a test server. It also holds the
// small LMTP and IMAP clients the tests drive it with.
//
// Missing binaries fail the test when the environment variable CI is set
// (.ci/run installs them) and skip it, saying what to install, otherwise.
package dovecottest

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/mailpush/mailpush/dovecot"
)

//go:embed dovecot.conf.tmpl
var configTemplate string

// Files that Debian's packages install and the tests need.
var required = []struct{ path, pkg string }{
	{"/usr/sbin/dovecot", "dovecot-core"},
	{"/usr/bin/doveadm", "dovecot-core"},
	{"/usr/lib/dovecot/imap", "dovecot-imapd"},
	{"/usr/lib/dovecot/lmtp", "dovecot-lmtpd"},
	{"/usr/lib/dovecot/modules/lib22_push_notification_lua_plugin.so", "dovecot-auth-lua"},
	{"/usr/bin/swaks", "swaks"},
}

// Require fails (under CI) or skips the test when Dovecot or swaks is missing.
func Require(t testing.TB) {
	t.Helper()
	var missing []string
	for _, r := range required {
		if _, err := os.Stat(r.path); err != nil {
			missing = append(missing, r.pkg+" ("+r.path+")")
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "real Dovecot needed: apt-get install dovecot-imapd dovecot-lmtpd dovecot-auth-lua swaks; missing " + strings.Join(missing, ", ")
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Options says where the Dovecot pushes to.
type Options struct {
	// PushURL is mailpush's base URL, e.g. http://127.0.0.1:8080.
	PushURL string
	// Password is the tenant's Dovecot secret (the user is "dovecot", as in
	// the docs).
	Password string
}

// Server is a running Dovecot.
type Server struct {
	Dir      string
	IMAPAddr string
	LMTPAddr string
	config   string
	cmd      *exec.Cmd
	exited   chan struct{}
	mu       sync.Mutex
	users    []string
}

// Start runs Dovecot in the foreground, owned by the test, and stops it at
// the end of the test.
func Start(t testing.TB, opt Options) *Server {
	t.Helper()
	Require(t)
	dir := t.TempDir()
	// Mail processes run as an unprivileged user: they must reach the
	// directory (t.TempDir's parents are 0700).
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	vars, mailUID, mailGID := identity(t)
	if err := os.MkdirAll(filepath.Join(dir, "home"), 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		os.Chown(filepath.Join(dir, "home"), mailUID, mailGID)
	}
	if err := os.WriteFile(filepath.Join(dir, "users"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "mailpush.lua"), []byte(dovecot.LuaScript), 0o644); err != nil {
		t.Fatal(err)
	}
	snippet, err := Snippet(opt, filepath.Join(dir, "mailpush.lua"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "90-mailpush.conf"), []byte(snippet), 0o644); err != nil {
		t.Fatal(err)
	}
	vars["Dir"] = dir

	// Free ports are found by binding and releasing them; another process
	// may take one meanwhile, so a failed start is retried on new ports.
	var lastErr error
	for range 3 {
		vars["IMAPPort"], vars["LMTPPort"] = freePort(t), freePort(t)
		s := &Server{Dir: dir, IMAPAddr: "127.0.0.1:" + vars["IMAPPort"], LMTPAddr: "127.0.0.1:" + vars["LMTPPort"], config: filepath.Join(dir, "dovecot.conf")}
		var conf bytes.Buffer
		template.Must(template.New("dovecot.conf").Option("missingkey=error").Parse(configTemplate)).Execute(&conf, vars)
		if err := os.WriteFile(s.config, conf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		if lastErr = s.start(); lastErr == nil {
			t.Cleanup(func() {
				s.stop()
				if t.Failed() {
					t.Logf("Dovecot log:\n%s", s.Log())
				}
			})
			return s
		}
	}
	t.Fatalf("dovecot did not start: %v\n%s", lastErr, readFile(filepath.Join(dir, "dovecot.log")))
	return nil
}

// Snippet is dovecot.ConfigSnippet with its placeholders replaced. It fails
// if a placeholder is gone, so that the docs and the test cannot drift apart.
func Snippet(opt Options, luaPath string) (string, error) {
	u, err := url.Parse(opt.PushURL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("push URL %q: not an absolute URL", opt.PushURL)
	}
	s := dovecot.ConfigSnippet
	for _, p := range []string{"http://dovecot:CHANGE-ME@push.example.com/dovecot/notify", "mailpush_url = http://push.example.com/dovecot/notify", "mailpush_username = dovecot", "mailpush_password = CHANGE-ME", "lua:file=/etc/dovecot/mailpush.lua"} {
		if !strings.Contains(s, p) {
			return "", fmt.Errorf("dovecot/conf/90-mailpush.conf no longer contains %q", p)
		}
	}
	return strings.NewReplacer("push.example.com", u.Host, "CHANGE-ME", opt.Password, "http://", u.Scheme+"://", "/etc/dovecot/mailpush.lua", luaPath).Replace(s), nil
}

// identity picks the users Dovecot runs as: Debian's dovenull and dovecot
// with mail owned by "mail" when the test runs as root (Dovecot refuses mail
// access as root), else the current user for everything.
func identity(t testing.TB) (vars map[string]string, uid, gid int) {
	if os.Getuid() != 0 {
		u, err := user.Current()
		if err != nil {
			t.Fatal(err)
		}
		g, _ := user.LookupGroupId(u.Gid)
		group := u.Gid
		if g != nil {
			group = g.Name
		}
		return map[string]string{"MailUser": u.Username, "MailGroup": group, "LoginUser": u.Username, "InternalUser": u.Username}, os.Getuid(), os.Getgid()
	}
	u, err := user.Lookup("mail")
	if err != nil {
		t.Fatalf("user mail: %v", err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return map[string]string{"MailUser": "mail", "MailGroup": u.Gid, "LoginUser": "dovenull", "InternalUser": "dovecot"}, uid, gid
}

func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func (s *Server) start() error {
	s.cmd = exec.Command("/usr/sbin/dovecot", "-F", "-c", s.config)
	// Pdeathsig: a test binary that dies (a timeout panic skips Cleanup)
	// takes its Dovecot with it.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	var out bytes.Buffer
	s.cmd.Stdout, s.cmd.Stderr = &out, &out
	if err := s.cmd.Start(); err != nil {
		return err
	}
	s.exited = make(chan struct{})
	go func() { s.cmd.Wait(); close(s.exited) }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ready := true
		for _, a := range []string{s.IMAPAddr, s.LMTPAddr} {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err != nil {
				ready = false
				break
			}
			c.Close()
		}
		if ready {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("dovecot exited: %s %s", out.String(), readFile(filepath.Join(s.Dir, "dovecot.log")))
		case <-ctx.Done():
			s.stop()
			return errors.New("dovecot did not listen within 20s")
		case <-tick.C:
		}
	}
}

// stop ends the master (which ends its children) and waits for it.
func (s *Server) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
	}
}

// Log returns Dovecot's log so far.
func (s *Server) Log() string { return readFile(filepath.Join(s.Dir, "dovecot.log")) }

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// AddUser adds a mail user with a plain password to the passwd-file. Add
// every user before the first login or doveadm call: Dovecot looks at the
// file at most once a second.
func (s *Server) AddUser(t testing.TB, name, password string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users = append(s.users, fmt.Sprintf("%s:{PLAIN}%s::::%s::", name, password, filepath.Join(s.Dir, "home", name)))
	path := filepath.Join(s.Dir, "users")
	if err := os.WriteFile(path, []byte(strings.Join(s.users, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// EnablePush sets the user's push METADATA as the Dovecot docs say, with
// doveadm: both drivers then report the user as id.
func (s *Server) EnablePush(t testing.TB, name, id string) {
	t.Helper()
	s.doveadm(t, "mailbox", "metadata", "set", "-u", name, "-s", "", "/private/vendor/vendor.dovecot/http-notify", "user="+id)
}

func (s *Server) doveadm(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("/usr/bin/doveadm", append([]string{"-c", s.config}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("doveadm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Swaks delivers one message over LMTP with swaks, as an MTA would. from is
// the From header ("Name <addr>" or an address); its address is the
// envelope sender.
func (s *Server) Swaks(t testing.TB, from, to, subject string) {
	t.Helper()
	a, err := mail.ParseAddress(from)
	if err != nil {
		t.Fatalf("from %q: %v", from, err)
	}
	out, err := exec.Command("/usr/bin/swaks", "--protocol", "LMTP", "--server", s.LMTPAddr, "--from", a.Address, "--to", to,
		"--header", "From: "+from, "--header", "Subject: "+subject, "--body", "Hello from the mailpush test.", "--silent", "2").CombinedOutput()
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
}
