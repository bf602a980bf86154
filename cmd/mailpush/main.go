// Command mailpush is the mailpush server and its admin commands:
//
//	mailpush serve  [--config FILE]   run every configured service
//	mailpush tenant add NAME [--allow-host HOST]... [--max-content MODE]
//	mailpush tenant set NAME [--allow-host HOST]... [--max-content MODE]
//	mailpush keys rotate [--config FILE]
//	mailpush gate import FILE --tenant NAME
//	mailpush version
//
// This is the only package that wires the adapters together (see Main).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/seal"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.Environ()); err != nil {
		fmt.Fprintln(os.Stderr, "mailpush:", err)
		var u usageError
		if errors.As(err, &u) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

const usage = `usage:
  mailpush serve [--config FILE]
  mailpush tenant add NAME [--config FILE] [--allow-host HOST]... [--max-content badge|subject|subject_sender]
  mailpush tenant set NAME [--config FILE] [--allow-host HOST]... [--max-content badge|subject|subject_sender]
  mailpush keys rotate [--config FILE]
  mailpush gate import FILE --tenant NAME [--config FILE]   (CSV: deviceId,user,deviceType,state)
  mailpush bench [-scenario fanout|realworld|overload|raw|registrations] [flags]   (load test, in-process; -h for flags)
  mailpush version`

func run(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) error {
	if len(args) == 0 {
		return usageError{usage}
	}
	switch args[0] {
	case "serve":
		return runServe(ctx, args[1:], stderr, environ)
	case "tenant":
		if len(args) < 2 || (args[1] != "add" && args[1] != "set") {
			return usageError{usage}
		}
		return runTenant(ctx, args[1], args[2:], stdout, stderr, environ)
	case "keys":
		if len(args) < 2 || args[1] != "rotate" {
			return usageError{usage}
		}
		return runKeysRotate(args[2:], stdout, stderr, environ)
	case "gate":
		return runGate(ctx, args[1:], stdout, stderr, environ)
	case "bench":
		return runBench(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "mailpush", mailpush.Version)
		return nil
	case "help", "--help", "-h":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	return usageError{fmt.Sprintf("unknown command %q\n%s", args[0], usage)}
}

func configFlag(fs *flag.FlagSet, environ []string) *string {
	def := ""
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "MAILPUSH_CONFIG="); ok {
			def = v
		}
	}
	return fs.String("config", def, "YAML configuration file (default: none, or $MAILPUSH_CONFIG)")
}

func runServe(ctx context.Context, args []string, stderr io.Writer, environ []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs, environ)
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	cfg, err := LoadConfig(*path, environ)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := NewMain(cfg, stderr)
	if err := m.Run(ctx); err != nil {
		m.Close()
		return err
	}
	<-ctx.Done()
	m.Logger.Info("shutting down")
	return m.Close()
}

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func runTenant(ctx context.Context, verb string, args []string, stdout, stderr io.Writer, environ []string) error {
	fs := flag.NewFlagSet("tenant "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs, environ)
	var hosts stringList
	fs.Var(&hosts, "allow-host", "mail-server host the tenant may use (repeatable; *.example.com for a domain)")
	maxContent := fs.String("max-content", "", "the most a push may carry: badge, subject or subject_sender")
	name, err := parseWithArg(fs, args)
	if err != nil {
		return err
	}
	if *maxContent != "" && mailpush.ContentMode(*maxContent).Rank() < 0 {
		return usageError{fmt.Sprintf("--max-content must be badge, subject or subject_sender, not %q", *maxContent)}
	}
	m, err := openAdmin(ctx, *path, environ, stderr)
	if err != nil {
		return err
	}
	defer m.Close()
	if verb == "add" {
		tok, err := m.AddTenant(ctx, name, hosts, mailpush.ContentMode(*maxContent))
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "tenant %s created. Its API token, shown only this once:\n%s\n", name, tok)
		return nil
	}
	return m.SetTenant(ctx, name, hosts, mailpush.ContentMode(*maxContent))
}

// runKeysRotate makes new current sealing and callback keys. Old keys stay in
// the keyring, so credentials sealed and callback URLs issued before keep
// working; servers pick the new keys up at their next start.
func runKeysRotate(args []string, stdout, stderr io.Writer, environ []string) error {
	fs := flag.NewFlagSet("keys rotate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs, environ)
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return usageError{usage}
	}
	cfg, err := LoadConfig(*path, environ)
	if err != nil {
		return err
	}
	keys, err := seal.Open(cfg.KeyDir, time.Now())
	if err != nil {
		return err
	}
	old, _ := keys.PublicKey()
	if err := keys.Rotate(time.Now()); err != nil {
		return err
	}
	id, _ := keys.PublicKey()
	fmt.Fprintf(stdout, "sealing key %s is now current (was %s); restart every server to use it\n", id, old)
	return nil
}

// parseWithArg parses flags around the one positional argument (NAME or
// FILE), which may come before or after them.
func parseWithArg(fs *flag.FlagSet, args []string) (string, error) {
	var arg string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		arg, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return "", usageError{err.Error()}
	}
	if arg == "" && fs.NArg() == 1 {
		arg = fs.Arg(0)
	} else if fs.NArg() > 0 || arg == "" {
		return "", usageError{usage}
	}
	return arg, nil
}

// openAdmin loads the configuration and opens the keyring and the store for
// an admin command (the server may be running beside it: SQLite's WAL lets
// both write).
func openAdmin(ctx context.Context, path string, environ []string, stderr io.Writer) (*Main, error) {
	cfg, err := LoadConfig(path, environ)
	if err != nil {
		return nil, err
	}
	m := NewMain(cfg, stderr)
	if err := m.openStore(ctx); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}
