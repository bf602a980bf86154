package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/mailpush/mailpush"
)

// DebugConfig is the debug: block.
type DebugConfig struct {
	// PprofListen serves Go's profiler (net/http/pprof) on its own
	// listener, off by default. It must be a loopback address, and every
	// request needs an admin-scope token: profiles show the program's
	// insides (stacks, allocation sites), so they are for operators on the
	// host only, never on the public listener.
	PprofListen string `yaml:"pprofListen"`
}

func (c *Config) validateDebug(bad func(key, format string, args ...any)) {
	addr := c.Debug.PprofListen
	if addr == "" {
		return
	}
	host, _, err := net.SplitHostPort(addr)
	ip := net.ParseIP(host)
	if err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
		bad("debug.pprofListen", "%q must be a loopback host:port such as 127.0.0.1:6060 (profiles are for operators on the host)", addr)
	}
}

// startPprof serves the profiler on its own loopback listener.
func (m *Main) startPprof() error {
	addr := m.Config.Debug.PprofListen
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("config key debug.pprofListen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	m.pprof = &http.Server{Handler: m.adminOnly(mux), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := m.pprof.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.Logger.Error("pprof listener stopped", "err", err)
		}
	}()
	m.Logger.Info("pprof on", "listen", ln.Addr().String())
	m.pprofAddr = ln.Addr().String()
	return nil
}

// adminOnly admits requests that carry an admin-scope token.
func (m *Main) adminOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			http.Error(w, "pprof needs Authorization: Bearer <admin token>", http.StatusUnauthorized)
			return
		}
		_, tok, err := mailpush.VerifyToken(r.Context(), m.Store, bearer)
		if err != nil {
			http.Error(w, mailpush.ErrorMessage(err), http.StatusUnauthorized)
			return
		}
		if tok.Scope != mailpush.ScopeAdmin {
			http.Error(w, "pprof needs a token of scope admin", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}
