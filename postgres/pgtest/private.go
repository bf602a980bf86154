package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Server is a private PostgreSQL server that one test owns: its own data
// directory in a temp dir and its own loopback port, so that the test may
// stop and start it (a database outage) without touching the machine's
// shared server, which other tests use at the same time.
type Server struct {
	// URL reaches the server's database postgres as its superuser
	// postgres, trust auth, no TLS.
	URL string

	t    testing.TB
	bin  string
	dir  string
	port string
	cred *syscall.Credential

	mu      sync.Mutex
	cmd     *exec.Cmd
	log     *os.File
	exited  chan struct{} // closed when cmd has exited
	waitErr error         // cmd.Wait's result, once exited is closed
}

// Private initialises and starts a private server (initdb and postgres from
// /usr/lib/postgresql/*/bin, or the directory named by
// MAILPUSH_TEST_POSTGRES_BIN) and stops it and removes its files when t
// ends. PostgreSQL refuses to run as root: when the test runs as root the
// server runs as the user postgres. Outside CI a missing PostgreSQL
// installation skips the test; under CI (CI set) it fails it.
func Private(t testing.TB) *Server {
	t.Helper()
	bin := binDir()
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("initdb not found in /usr/lib/postgresql/*/bin (CI needs PostgreSQL: apt-get install postgresql)")
		}
		t.Skip("initdb not found in /usr/lib/postgresql/*/bin: install postgresql or set MAILPUSH_TEST_POSTGRES_BIN")
	}
	s := &Server{t: t, bin: bin}
	// Not t.TempDir: its parents are private to root, and the server may run
	// as postgres.
	dir, err := os.MkdirTemp("", "mailpush-pg-")
	if err != nil {
		t.Fatal(err)
	}
	s.dir = dir
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root, PostgreSQL needs the user postgres: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	initdb := s.command("initdb", "-D", s.data(), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	s.port = freePort(t)
	s.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%s/postgres?sslmode=disable", s.port)
	t.Cleanup(s.Stop)
	s.Start()
	return s
}

func (s *Server) data() string { return filepath.Join(s.dir, "data") }

func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	return cmd
}

// Start starts the server and returns once it accepts connections.
func (s *Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatal("pgtest: Start of a running server")
	}
	log, err := os.OpenFile(filepath.Join(s.dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	// The socket directory is the temp dir: never /var/run/postgresql,
	// which the machine's own server uses.
	cmd := s.command("postgres", "-D", s.data(), "-p", s.port, "-k", s.dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		s.t.Fatalf("start postgres: %v", err)
	}
	exited := make(chan struct{})
	s.cmd, s.log, s.exited = cmd, log, exited
	go func() { // ends when the server exits (Stop, or a crash)
		s.waitErr = cmd.Wait()
		close(exited)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, s.URL)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return
		}
		select {
		case <-exited:
			s.cmd = nil
			log.Close()
			s.t.Fatalf("postgres exited at start: %v\n%s", s.waitErr, s.Log())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("postgres did not accept connections within a minute: %v\n%s", err, s.Log())
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

// Stop shuts the server down the way an operator's restart does ("fast"
// shutdown, SIGINT: open sessions are cut, a checkpoint is written) and
// returns once it has exited. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
	case <-time.After(60 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
	s.log.Close()
}

// Log returns what the server wrote to its log so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "postgres.log"))
	return string(b)
}

// binDir is the directory of initdb and postgres: MAILPUSH_TEST_POSTGRES_BIN
// or the newest /usr/lib/postgresql/*/bin that has them.
func binDir() string {
	if d := os.Getenv("MAILPUSH_TEST_POSTGRES_BIN"); d != "" {
		return d
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	return ""
}

func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}
