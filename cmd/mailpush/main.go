// Command mailpush is the mailpush server and its admin commands:
//
//	mailpush serve  [--config FILE]   run every configured service
//	mailpush tenant add NAME [--allow-host HOST]... [--max-content MODE]
//	mailpush tenant set NAME [--allow-host HOST]... [--max-content MODE]
//	mailpush token add --tenant NAME --scope app|backend|admin
//	mailpush token list --tenant NAME
//	mailpush token revoke ID --tenant NAME
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
	"text/tabwriter"
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
  mailpush token add --tenant NAME --scope app|backend|admin [--config FILE]
  mailpush token list --tenant NAME [--config FILE]
  mailpush token revoke ID --tenant NAME [--config FILE]
  mailpush keys rotate [--config FILE]
  mailpush gate import FILE --tenant NAME [--config FILE]   (CSV: deviceId,user,deviceType,state)
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
	case "token":
		if len(args) < 2 {
			return usageError{usage}
		}
		return runToken(ctx, args[1], args[2:], stdout, stderr, environ)
	case "keys":
		if len(args) < 2 || args[1] != "rotate" {
			return usageError{usage}
		}
		return runKeysRotate(args[2:], stdout, stderr, environ)
	case "gate":
		return runGate(ctx, args[1:], stdout, stderr, environ)
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

// runToken adds, lists or revokes a tenant's API tokens. A token's secret is
// printed once by add and never again: only its hash is stored.
func runToken(ctx context.Context, verb string, args []string, stdout, stderr io.Writer, environ []string) error {
	fs := flag.NewFlagSet("token "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs, environ)
	tenant := fs.String("tenant", "", "the tenant's name (required)")
	scope := fs.String("scope", "", "add: app (inside the mail app), backend (the tenant's own server) or admin (MDM and operators)")
	var id string
	var err error
	switch verb {
	case "add", "list":
		err = fs.Parse(args)
		if err == nil && fs.NArg() > 0 {
			err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
		}
	case "revoke":
		id, err = parseWithArg(fs, args)
	default:
		return usageError{fmt.Sprintf("unknown token command %q\n%s", verb, usage)}
	}
	if err != nil {
		return usageError{err.Error() + "\n" + usage}
	}
	if *tenant == "" {
		return usageError{"--tenant NAME is required"}
	}
	if verb == "add" && !mailpush.Scope(*scope).Valid() {
		return usageError{fmt.Sprintf("--scope must be app, backend or admin, not %q", *scope)}
	}
	if verb != "add" && *scope != "" {
		return usageError{"--scope is only for token add"}
	}
	m, err := openAdmin(ctx, *path, environ, stderr)
	if err != nil {
		return err
	}
	defer m.Close()
	switch verb {
	case "add":
		bearer, err := m.AddToken(ctx, *tenant, mailpush.Scope(*scope))
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s token for tenant %s, shown only this once:\n%s\n", *scope, *tenant, bearer)
	case "list":
		toks, err := m.Tokens(ctx, *tenant)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSCOPE\tCREATED")
		for _, t := range toks {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", t.ID, t.Scope, t.CreatedAt.UTC().Format(time.RFC3339))
		}
		return tw.Flush()
	case "revoke":
		if err := m.RevokeToken(ctx, *tenant, id); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "token %s of tenant %s revoked\n", id, *tenant)
	}
	return nil
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
