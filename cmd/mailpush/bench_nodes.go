package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Several nodes for the load command (-nodes N, PostgreSQL only): the
// in-process server is node 1 (it seeds the database, and the fakes and the
// load generator share its process as with one node); nodes 2..N are
// `mailpush serve` child processes of this same binary on the same
// configuration and database, each on its own loopback port. The load is
// spread over the nodes by mailbox (mailbox m's notifications go to node
// m mod N, in order, as a balancer with affinity would send them); the
// pushes of every node reach the same fake APNs. CPU figures then add the
// children's CPU time to this process's.

// benchNode is a child node.
type benchNode struct {
	cmd  *exec.Cmd
	base string
	log  *os.File
}

// startNodes starts nodes 2..N from the configuration file of node 1
// (cfgYAML, with "listen: 127.0.0.1:0" as its first line) and waits until
// each is ready.
func (b *bench) startNodes(ctx context.Context, cfgYAML string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	for i := 2; i <= b.f.nodes; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		addr := l.Addr().String()
		l.Close()
		yaml := strings.Replace(cfgYAML, "listen: 127.0.0.1:0\n", fmt.Sprintf("listen: %s\nnodeId: bench-node-%d\n", addr, i), 1)
		path := filepath.Join(b.dir, fmt.Sprintf("node%d.yaml", i))
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			return err
		}
		logf, err := os.Create(filepath.Join(b.dir, fmt.Sprintf("node%d.log", i)))
		if err != nil {
			return err
		}
		cmd := exec.Command(exe, "serve", "--config", path)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			logf.Close()
			return fmt.Errorf("node %d: %w", i, err)
		}
		n := &benchNode{cmd: cmd, base: "http://" + addr, log: logf}
		b.nodes = append(b.nodes, n)
		b.bases = append(b.bases, n.base)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for i, n := range b.nodes {
		for {
			resp, err := http.Get(n.base + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("node %d is not ready after 2 minutes (its log: %s)", i+2, n.log.Name())
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond): // polling with a deadline
			}
		}
	}
	spread := fmt.Sprintf("mailbox m's events go to node m mod %d", b.f.nodes)
	if b.f.scenario == "takeover" {
		spread = fmt.Sprintf("every event goes to node %d, which is killed", b.f.nodes)
	}
	fmt.Fprintf(b.out, "nodes: %d (node 1 in this process, %d `mailpush serve` child processes) on one PostgreSQL; %s\n", b.f.nodes, len(b.nodes), spread)
	return nil
}

// stopNodes stops the child nodes (SIGTERM: they drain and exit).
func (b *bench) stopNodes() {
	for _, n := range b.nodes {
		n.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, n := range b.nodes {
		done := make(chan struct{})
		go func() { n.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			n.cmd.Process.Kill()
			<-done
		}
		n.log.Close()
	}
	b.nodes = nil
}

// childCPU is the CPU time the running child nodes used so far.
func (b *bench) childCPU() time.Duration {
	var d time.Duration
	for _, n := range b.nodes {
		d += procCPU(n.cmd.Process.Pid)
	}
	return d
}

// childRSS is the child nodes' resident sets, in bytes.
func (b *bench) childRSS() []int64 {
	var out []int64
	for _, n := range b.nodes {
		out = append(out, procRSS(n.cmd.Process.Pid))
	}
	return out
}

// procCPU reads a process's user and system time from /proc/PID/stat.
func procCPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces: count from its end.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks
}

// procRSS reads a process's resident set from /proc/PID/status.
func procRSS(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// compareStores runs the scenario three times in one invocation: on SQLite,
// on PostgreSQL with one node, and on PostgreSQL with f.nodes nodes, and
// prints each figure's ratio to SQLite's. The three runs share the machine
// one after the other, so the ratios are only as steady as the machine's
// load between them (the load average is printed with them).
func compareStores(ctx context.Context, f benchFlags, lo, hi int, stdout, stderr io.Writer) error {
	type run struct {
		name string
		ph   phase
	}
	var runs []run
	for _, c := range []struct {
		name  string
		url   string
		nodes int
	}{{"SQLite", "", 1}, {"PostgreSQL, 1 node", f.dbURL, 1}, {fmt.Sprintf("PostgreSQL, %d nodes", f.nodes), f.dbURL, f.nodes}} {
		g := f
		g.compare, g.dbURL, g.nodes = false, c.url, c.nodes
		fmt.Fprintf(stdout, "\n== %s (load average %s)\n", c.name, loadAverage())
		b := &bench{f: g, lo: lo, hi: hi, out: stdout, progress: stderr}
		if err := b.run(ctx); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		runs = append(runs, run{c.name, b.measured})
	}
	fmt.Fprintf(stdout, "\n== %s, one invocation (load average now %s); ratios to SQLite\n", f.scenario, loadAverage())
	fmt.Fprintf(stdout, "%-22s %10s %8s %12s %8s %22s %22s\n", "", "pushes/s", "ratio", "CPU µs/push", "ratio", "ack p50/p99 ms", "event→push p50/p99 ms")
	base := runs[0].ph
	rate := func(p phase) float64 { return float64(p.pushes) / p.elapsed.Seconds() }
	cpu := func(p phase) float64 { return float64(p.cpu.Microseconds()) / float64(max(1, p.pushes)) }
	for _, r := range runs {
		fmt.Fprintf(stdout, "%-22s %10.0f %8.2f %12.1f %8.2f %10.1f / %-9.1f %10.1f / %-9.1f\n", r.name, rate(r.ph), rate(r.ph)/rate(base), cpu(r.ph), cpu(r.ph)/cpu(base),
			float64(pct(r.ph.acks, .5))/1e6, float64(pct(r.ph.acks, .99))/1e6, float64(pct(r.ph.e2e, .5))/1e6, float64(pct(r.ph.e2e, .99))/1e6)
	}
	fmt.Fprintln(stdout, "(CPU counts the bench process and the child nodes, not PostgreSQL's server; every process shares this machine's cores)")
	return nil
}

// loadAverage is /proc/loadavg's first three fields.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
