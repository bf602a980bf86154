// Command mailpush is the mailpush server and its admin commands:
//
//	mailpush serve  [--config FILE]   run every configured service
//	mailpush demo                     the server against fake Exchange and APNs, for a first look
//	mailpush config check FILE        validate a configuration without starting
//	mailpush tenant add|set|list|delete|migrate …
//	mailpush token add|list|revoke --tenant NAME …
//	mailpush keys rotate|list [--config FILE]
//	mailpush keys retire KEYID [--config FILE]
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
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/mailpush/mailpush"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.Environ()); err != nil && !errors.Is(err, errHelpShown) {
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
  mailpush demo [--listen ADDR] [--every DURATION]
  mailpush config check FILE
  mailpush tenant add NAME [--config FILE] [--allow-host HOST[:PORT]]... [--max-content badge|subject|subject_sender] [--device-subscribed on|off]
  mailpush tenant set NAME [--config FILE] [--allow-host HOST[:PORT]]... [--max-content badge|subject|subject_sender] [--device-subscribed on|off]
  mailpush tenant list [--config FILE]
  mailpush tenant delete NAME --yes [--config FILE]
  mailpush tenant migrate NAME --to graph [--dry-run] [--server URL] [--token-file FILE] [--config FILE]   (asks the running server; admin token)
  mailpush token add --tenant NAME --scope app|backend|admin [--config FILE]
  mailpush token list --tenant NAME [--config FILE]
  mailpush token revoke ID --tenant NAME [--config FILE]
  mailpush keys rotate [--config FILE]
  mailpush keys list [--config FILE]
  mailpush keys retire KEYID [--config FILE]
  mailpush gate import FILE --tenant NAME [--config FILE]   (CSV: deviceId,user,deviceType,state)
  mailpush registrations import FILE --tenant NAME [--config FILE]   (CSV: platform,token,address[,content[,environment]]; source dovecot)
  mailpush smime classify FILE [--password-file F]   (PEM, DER or PKCS#12: signing-only, encryption-only or both)
  mailpush bench [-scenario fanout|realworld|overload|raw|registrations] [flags]   (load test, in-process)
  mailpush version

Every command takes --help.`

func run(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) error {
	if len(args) == 0 {
		return usageError{usage}
	}
	switch args[0] {
	case "serve":
		return runServe(ctx, args[1:], stdout, stderr, environ)
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr, environ)
	case "config":
		if len(args) < 2 || args[1] != "check" {
			return subcommandError(stdout, "config", args[1:], "check")
		}
		return runConfigCheck(ctx, args[2:], stdout, stderr, environ)
	case "tenant":
		if len(args) < 2 || !slices.Contains([]string{"add", "set", "list", "delete", "migrate"}, args[1]) {
			return subcommandError(stdout, "tenant", args[1:], "add", "set", "list", "delete", "migrate")
		}
		if args[1] == "migrate" {
			return runTenantMigrate(ctx, args[2:], stdout, stderr, environ)
		}
		return runTenant(ctx, args[1], args[2:], stdout, stderr, environ)
	case "token":
		if len(args) < 2 || isHelp(args[1]) {
			return subcommandError(stdout, "token", args[1:], "add", "list", "revoke")
		}
		return runToken(ctx, args[1], args[2:], stdout, stderr, environ)
	case "keys":
		if len(args) < 2 || (args[1] != "rotate" && args[1] != "retire" && args[1] != "list") {
			return subcommandError(stdout, "keys", args[1:], "rotate", "retire", "list")
		}
		return runKeys(args[1], args[2:], stdout, stderr, environ)
	case "gate":
		if len(args) < 2 || args[1] != "import" {
			return subcommandError(stdout, "gate", args[1:], "import")
		}
		return runGate(ctx, args[1:], stdout, stderr, environ)
	case "registrations":
		if len(args) < 2 || args[1] != "import" {
			return subcommandError(stdout, "registrations", args[1:], "import")
		}
		return runRegistrationsImport(ctx, args[2:], stdout, stderr, environ)
	case "smime":
		if len(args) < 2 || args[1] != "classify" {
			return subcommandError(stdout, "smime", args[1:], "classify")
		}
		return runSMIME(args[2:], stdout, stderr)
	case "bench":
		return runBench(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-v":
		if len(args) > 1 && !isHelp(args[1]) {
			return usageError{fmt.Sprintf("version takes no arguments, got %q", args[1])}
		}
		fmt.Fprintln(stdout, "mailpush", mailpush.Version)
		return nil
	case "help", "--help", "-h", "-help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	return usageError{fmt.Sprintf("unknown command %q\n%s", args[0], usage)}
}

func isHelp(arg string) bool {
	return arg == "--help" || arg == "-h" || arg == "-help" || arg == "help"
}

// subcommandError answers "mailpush tenant" without a known verb: the help
// (exit 0) when asked for, otherwise a usage error naming what was given.
func subcommandError(stdout io.Writer, cmd string, rest []string, verbs ...string) error {
	if len(rest) > 0 && isHelp(rest[0]) {
		for line := range strings.SplitSeq(usage, "\n") {
			if strings.HasPrefix(line, "  mailpush "+cmd+" ") {
				fmt.Fprintln(stdout, "usage: "+strings.TrimSpace(line))
			}
		}
		return errHelpShown
	}
	if len(rest) == 0 {
		return usageError{fmt.Sprintf("%s needs a subcommand: %s\n%s", cmd, strings.Join(verbs, ", "), usage)}
	}
	return usageError{fmt.Sprintf("%s: unknown subcommand %q (want %s)\n%s", cmd, rest[0], strings.Join(verbs, ", "), usage)}
}

// errHelpShown is returned after --help printed a command's usage: the
// command did what was asked, so the program exits 0.
var errHelpShown = errors.New("help shown")

// newFlags makes a command's flag set: --help prints the command's usage
// line and its flags to stdout.
func newFlags(name, synopsis string, stdout, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "usage: mailpush %s\n", synopsis)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fs.SetOutput(stderr)
	}
	return fs
}

// parseFlags parses args around exactly len(names) positional arguments
// (which may come before, between or after the flags) and returns them.
// Missing and stray arguments are usage errors that say which.
func parseFlags(fs *flag.FlagSet, args []string, names ...string) ([]string, error) {
	var pos []string
	for {
		// flag stops at the first non-flag: take it and parse the rest.
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			return nil, errHelpShown
		}
		if err != nil {
			return nil, usageError{fmt.Sprintf("%s: %v (see mailpush %s --help)", fs.Name(), err, fs.Name())}
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) > len(names) {
		extra := pos[len(names):]
		return nil, usageError{fmt.Sprintf("%s: unexpected argument %q (see mailpush %s --help)", fs.Name(), extra[0], fs.Name())}
	}
	if len(pos) < len(names) {
		return nil, usageError{fmt.Sprintf("%s: missing %s (see mailpush %s --help)", fs.Name(), names[len(pos)], fs.Name())}
	}
	return pos, nil
}

func configFlag(fs *flag.FlagSet, environ []string) *string {
	return fs.String("config", envOf(environ, "MAILPUSH_CONFIG"), "YAML configuration file (default: none, or $MAILPUSH_CONFIG)")
}

// loadForCommand parses the flags of a command that takes only --config and
// loads the configuration.
func loadForCommand(name string, args []string, stdout, stderr io.Writer, environ []string) (Config, error) {
	fs := newFlags(name, name+" [--config FILE]", stdout, stderr)
	path := configFlag(fs, environ)
	if _, err := parseFlags(fs, args); err != nil {
		return Config{}, err
	}
	return LoadConfig(*path, environ)
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) error {
	cfg, err := loadForCommand("serve", args, stdout, stderr, environ)
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

// runConfigCheck validates a configuration file without starting anything.
// When the file's database and key directory exist it also checks that every
// tenants.<name> block names a tenant that exists.
func runConfigCheck(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) error {
	fs := newFlags("config check", "config check FILE", stdout, stderr)
	pos, err := parseFlags(fs, args, "FILE")
	if err != nil {
		return err
	}
	cfg, err := LoadConfig(pos[0], environ)
	if err != nil {
		return err
	}
	dbErr := error(nil)
	if cfg.Database.Driver == "sqlite" {
		_, dbErr = os.Stat(cfg.Database.Path)
	}
	_, keyErr := os.Stat(cfg.KeyDir)
	if dbErr == nil && keyErr == nil {
		m := NewMain(cfg, stderr)
		defer m.Close()
		if err := m.openStore(ctx); err != nil {
			return err
		}
		if err := m.checkTenantNames(ctx); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s is valid; its tenants exist in %s\n", pos[0], cfg.databaseName())
		return nil
	}
	fmt.Fprintf(stdout, "%s is valid (tenant names not checked: no database at %s yet)\n", pos[0], cfg.databaseName())
	return nil
}

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func runTenant(ctx context.Context, verb string, args []string, stdout, stderr io.Writer, environ []string) error {
	synopsis := map[string]string{
		"add":    "tenant add NAME [--config FILE] [--allow-host HOST[:PORT]]... [--max-content badge|subject|subject_sender] [--device-subscribed on|off]",
		"set":    "tenant set NAME [--config FILE] [--allow-host HOST[:PORT]]... [--max-content badge|subject|subject_sender] [--device-subscribed on|off]",
		"list":   "tenant list [--config FILE]",
		"delete": "tenant delete NAME --yes [--config FILE]",
	}[verb]
	fs := newFlags("tenant "+verb, synopsis, stdout, stderr)
	path := configFlag(fs, environ)
	var hosts stringList
	var maxContent, deviceSubscribed *string
	var confirmed *bool
	names := []string{"NAME"}
	switch verb {
	case "add", "set":
		fs.Var(&hosts, "allow-host", "mail-server host[:port] the tenant may use (repeatable; no port means 443; *.example.com for a domain)")
		help := "the most a push may carry: badge, subject or subject_sender"
		if verb == "add" {
			help += " (default badge, the most private)"
		}
		maxContent = fs.String("max-content", "", help)
		deviceSubscribed = fs.String("device-subscribed", "", "on: accept device-subscribed registrations, which prove only that the app can POST to its callback URL (their pushes reach only themselves); off: refuse them (default for new tenants)")
	case "list":
		names = nil
	case "delete":
		confirmed = fs.Bool("yes", false, "confirm: the tenant, its registrations, mailboxes, gate devices and queued pushes are deleted")
	}
	pos, err := parseFlags(fs, args, names...)
	if err != nil {
		return err
	}
	for _, h := range hosts {
		if err := mailpush.ValidAllowedHost(h); err != nil {
			return usageError{fmt.Sprintf("tenant %s: --allow-host: %s", verb, mailpush.ErrorMessage(err))}
		}
	}
	if maxContent != nil && *maxContent != "" && mailpush.ContentMode(*maxContent).Rank() < 0 {
		return usageError{fmt.Sprintf("tenant %s: --max-content must be badge, subject or subject_sender, not %q", verb, *maxContent)}
	}
	var set TenantSettings
	if maxContent != nil {
		set = TenantSettings{Hosts: hosts, MaxContent: mailpush.ContentMode(*maxContent)}
		switch *deviceSubscribed {
		case "":
		case "on", "off":
			on := *deviceSubscribed == "on"
			set.DeviceSubscribed = &on
		default:
			return usageError{fmt.Sprintf("tenant %s: --device-subscribed must be on or off, not %q", verb, *deviceSubscribed)}
		}
	}
	if confirmed != nil && !*confirmed {
		return usageError{fmt.Sprintf("tenant delete %s: deleting a tenant removes its registrations, mailboxes, gate devices and queued pushes; add --yes to confirm", pos[0])}
	}
	m, err := openAdmin(ctx, *path, environ, stderr)
	if err != nil {
		return err
	}
	defer m.Close()
	switch verb {
	case "add":
		content := mailpush.ContentMode(*maxContent)
		note := ""
		if content == "" {
			content = mailpush.ContentBadge
			note = " (the default and most private: pass --max-content subject or subject_sender to show more)"
		}
		set.MaxContent = content
		tok, err := m.AddTenant(ctx, pos[0], set)
		if err != nil {
			return fmt.Errorf("tenant %s: %w", pos[0], err)
		}
		fmt.Fprintf(stdout, "tenant %s created; its pushes carry at most: %s%s\n", pos[0], content, note)
		if len(hosts) == 0 {
			fmt.Fprintf(stdout, "it may use no mail-server host yet: add them with mailpush tenant set %s --allow-host HOST\n", pos[0])
		}
		fmt.Fprintf(stdout, "Its API token, shown only this once:\n%s\n", tok)
		return nil
	case "set":
		if err := m.SetTenant(ctx, pos[0], set); err != nil {
			return fmt.Errorf("tenant %s: %w", pos[0], err)
		}
		return nil
	case "list":
		ts, err := m.Store.Tenants(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tID\tMAX CONTENT\tALLOWED HOSTS\tCREATED")
		for _, t := range ts {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Name, t.ID, t.MaxContent, strings.Join(t.AllowedHosts, ","), t.CreatedAt.UTC().Format(time.RFC3339))
		}
		return tw.Flush()
	}
	t, err := m.Store.TenantByName(ctx, pos[0])
	if err != nil {
		return fmt.Errorf("tenant %s: %w", pos[0], err)
	}
	if err := m.Store.DeleteTenant(ctx, t.ID); err != nil {
		return fmt.Errorf("tenant %s: %w", pos[0], err)
	}
	fmt.Fprintf(stdout, "tenant %s deleted\n", pos[0])
	return nil
}

// runToken adds, lists or revokes a tenant's API tokens. A token's secret is
// printed once by add and never again: only its hash is stored.
func runToken(ctx context.Context, verb string, args []string, stdout, stderr io.Writer, environ []string) error {
	synopsis, ok := map[string]string{
		"add":    "token add --tenant NAME --scope app|backend|admin [--config FILE]",
		"list":   "token list --tenant NAME [--config FILE]",
		"revoke": "token revoke ID --tenant NAME [--config FILE]",
	}[verb]
	if !ok {
		return subcommandError(stdout, "token", []string{verb}, "add", "list", "revoke")
	}
	fs := newFlags("token "+verb, synopsis, stdout, stderr)
	path := configFlag(fs, environ)
	tenant := fs.String("tenant", "", "the tenant's name (required)")
	scope := fs.String("scope", "", "add: app (inside the mail app), backend (the tenant's own server) or admin (MDM and operators)")
	var names []string
	if verb == "revoke" {
		names = []string{"ID"}
	}
	pos, err := parseFlags(fs, args, names...)
	if err != nil {
		return err
	}
	var id string
	if verb == "revoke" {
		id = pos[0]
	}
	if *tenant == "" {
		return usageError{fmt.Sprintf("token %s: --tenant NAME is required (see mailpush token %s --help)", verb, verb)}
	}
	if verb == "add" && !mailpush.Scope(*scope).Valid() {
		return usageError{fmt.Sprintf("token add: --scope must be app, backend or admin, not %q", *scope)}
	}
	if verb != "add" && *scope != "" {
		return usageError{fmt.Sprintf("token %s: --scope is only for token add", verb)}
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
			return fmt.Errorf("token add: tenant %s: %w", *tenant, err)
		}
		fmt.Fprintf(stdout, "%s token for tenant %s, shown only this once:\n%s\n", *scope, *tenant, bearer)
	case "list":
		toks, err := m.Tokens(ctx, *tenant)
		if err != nil {
			return fmt.Errorf("token list: tenant %s: %w", *tenant, err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSCOPE\tCREATED")
		for _, t := range toks {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", t.ID, t.Scope, t.CreatedAt.UTC().Format(time.RFC3339))
		}
		return tw.Flush()
	case "revoke":
		if err := m.RevokeToken(ctx, *tenant, id); err != nil {
			return fmt.Errorf("token revoke %s: tenant %s: %w", id, *tenant, err)
		}
		fmt.Fprintf(stdout, "token %s of tenant %s revoked\n", id, *tenant)
	}
	return nil
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
