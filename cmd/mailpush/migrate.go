package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/api"
	"github.com/mailpush/mailpush/graph"
)

// `mailpush tenant migrate NAME --to graph` is a client of the running
// server (POST /api/v1/migrations with an admin token, then a long poll of
// GET /api/v1/migrations/graph), unlike the other tenant commands, which
// open the store. The cut-over must happen where the webhooks are: a new
// Graph subscription is validated by a handshake that only the process
// creating it answers, the old EWS subscription is ended by the answer to
// its next notification, and the mailboxes' addresses (the store keeps
// keyed hashes) are in the server's memory only. See docs/migrate.md.

// migrator is the server's mailpush.Migrator: it names the missing
// configuration key before the Graph source is asked.
type migrator struct {
	cfg   *Config
	graph *graph.Source
}

func (m migrator) check(t *mailpush.Tenant, to mailpush.Source) error {
	if to != mailpush.SourceGraph {
		return mailpush.Errorf(mailpush.EInvalid, "to must be graph, not %q", to)
	}
	key := "tenants." + t.Name + ".graph"
	g := m.cfg.Tenants[t.Name].Graph
	switch {
	case g == nil:
		return mailpush.Errorf(mailpush.EUnsupported, "tenant %s has no Microsoft Graph app: configure %s (tenantId, clientId, and clientSecretFile, clientSecretEnv or certificateFile) and restart the server; nothing was changed", t.Name, key)
	case g.TenantID == "":
		return mailpush.Errorf(mailpush.EUnsupported, "%s.tenantId is not configured; nothing was changed", key)
	case g.ClientID == "":
		return mailpush.Errorf(mailpush.EUnsupported, "%s.clientId is not configured; nothing was changed", key)
	case g.ClientSecretFile == "" && g.ClientSecretEnv == "" && g.CertificateFile == "":
		return mailpush.Errorf(mailpush.EUnsupported, "%s.clientSecretFile (or clientSecretEnv, or certificateFile) is not configured; nothing was changed", key)
	case m.graph == nil:
		return mailpush.Errorf(mailpush.EUnsupported, "the Microsoft Graph source is not running on this server")
	}
	return nil
}

func (m migrator) StartMigration(ctx context.Context, t *mailpush.Tenant, to mailpush.Source, dryRun bool) (*mailpush.MigrationReport, error) {
	if err := m.check(t, to); err != nil {
		return nil, err
	}
	return m.graph.StartMigration(ctx, t, to, dryRun)
}

func (m migrator) Migration(ctx context.Context, t *mailpush.Tenant, to mailpush.Source, wait time.Duration) (*mailpush.MigrationReport, error) {
	if err := m.check(t, to); err != nil {
		return nil, err
	}
	return m.graph.Migration(ctx, t, to, wait)
}

// migrationPoll is how long one GET of the CLI waits for the end.
const migrationPoll = 30 * time.Second

// runTenantMigrate asks the running server to move a tenant's EWS
// registrations to Graph and follows it to the end. It exits non-zero
// unless every mailbox moved (in a dry run: would move).
func runTenantMigrate(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) error {
	fs := newFlags("tenant migrate", "tenant migrate NAME --to graph [--dry-run] [--server URL] [--token-file FILE] [--config FILE]", stdout, stderr)
	path := configFlag(fs, environ)
	to := fs.String("to", "", "the source to move to: graph (Microsoft Graph; required)")
	dry := fs.Bool("dry-run", false, "say what would happen: counts, and which mailboxes Graph does not know (reads only: one GET users/{id} per mailbox); nothing changes")
	server := fs.String("server", envOf(environ, "MAILPUSH_SERVER"), "the running server's base URL (default $MAILPUSH_SERVER, else the configuration's publicUrl, else http://<listen>)")
	tokenFile := fs.String("token-file", "", "a file holding the tenant's admin-scope API token (default: $MAILPUSH_ADMIN_TOKEN)")
	pos, err := parseFlags(fs, args, "NAME")
	if err != nil {
		return err
	}
	if *to != string(mailpush.SourceGraph) {
		return usageError{fmt.Sprintf("tenant migrate: --to must be graph (mailboxes move from EWS to Microsoft Graph), not %q", *to)}
	}
	token := envOf(environ, "MAILPUSH_ADMIN_TOKEN")
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("tenant migrate: --token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return usageError{"tenant migrate: an admin-scope token of the tenant is required: --token-file FILE or $MAILPUSH_ADMIN_TOKEN (mailpush token add --tenant NAME --scope admin)"}
	}
	base := *server
	if base == "" {
		cfg, err := LoadConfig(*path, environ)
		if err != nil {
			return err
		}
		base = cfg.serverURL()
	}
	c := &migrateClient{base: strings.TrimSuffix(base, "/"), token: token, http: &http.Client{Timeout: migrationPoll + 30*time.Second}}
	rep, err := c.do(ctx, http.MethodPost, "/api/v1/migrations", map[string]any{"tenant": pos[0], "to": *to, "dryRun": *dry})
	if err != nil {
		return fmt.Errorf("tenant migrate %s: %w", pos[0], err)
	}
	for rep.State == string(mailpush.MigrationRunning) {
		fmt.Fprintf(stderr, "migrating %s: %d of %d mailboxes looked at so far\n", pos[0], rep.Migrated+len(rep.Stayed), rep.Mailboxes)
		if rep, err = c.do(ctx, http.MethodGet, fmt.Sprintf("/api/v1/migrations/graph?wait=%d", int(migrationPoll/time.Second)), nil); err != nil {
			return fmt.Errorf("tenant migrate %s: %w", pos[0], err)
		}
	}
	printMigration(stdout, rep)
	switch {
	case rep.State == string(mailpush.MigrationFailed):
		return fmt.Errorf("tenant migrate %s: stopped: %s (run it again: what moved stays moved)", pos[0], rep.Error)
	case len(rep.Stayed) > 0 && rep.DryRun:
		return fmt.Errorf("tenant migrate %s: %d of %d mailboxes would stay on EWS", pos[0], len(rep.Stayed), rep.Mailboxes)
	case len(rep.Stayed) > 0:
		return fmt.Errorf("tenant migrate %s: %d of %d mailboxes stay on EWS (see above; run it again once fixed)", pos[0], len(rep.Stayed), rep.Mailboxes)
	}
	return nil
}

func printMigration(w io.Writer, r *api.Migration) {
	verb, moved := "migrated", "moved"
	if r.DryRun {
		fmt.Fprintf(w, "dry run: nothing was changed; Graph was only read (%d user lookups, %d subscription writes)\n", r.GraphReads, r.GraphWrites)
		verb, moved = "would migrate", "would move"
	}
	fmt.Fprintf(w, "tenant %s: %d EWS mailboxes with %d registrations; %s %d mailboxes (%s %d registrations); %d stay on EWS\n",
		r.Tenant, r.Mailboxes, r.Registrations, verb, r.Migrated, moved, r.MovedRegistrations, len(r.Stayed))
	if !r.DryRun {
		fmt.Fprintf(w, "Graph: %d user lookups, %d subscriptions created\n", r.GraphReads, r.GraphWrites)
	}
	if len(r.Stayed) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MAILBOX\tADDRESS ID\tREASON\tDETAIL")
	for _, s := range r.Stayed {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Mailbox, s.AddressID, s.Reason, s.Detail)
	}
	tw.Flush()
}

type migrateClient struct {
	base, token string
	http        *http.Client
}

func (c *migrateClient) do(ctx context.Context, method, path string, body any) (*api.Migration, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("the server at %s does not answer (is it running? --server): %w", c.base, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	if res.StatusCode >= 300 {
		var e struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error.Message != "" {
			return nil, fmt.Errorf("the server refused (HTTP %d %s): %s", res.StatusCode, e.Error.Code, e.Error.Message)
		}
		return nil, fmt.Errorf("the server refused: HTTP %d", res.StatusCode)
	}
	var out api.Migration
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, errors.New("the server's answer is not a migration")
	}
	return &out, nil
}

func envOf(environ []string, name string) string {
	v := ""
	for _, kv := range environ {
		if x, ok := strings.CutPrefix(kv, name+"="); ok {
			v = x
		}
	}
	return v
}

// serverURL is where the CLI reaches the running server: publicUrl, else
// the listen address.
func (c *Config) serverURL() string {
	if c.PublicURL != "" {
		return c.PublicURL
	}
	scheme := "http"
	if c.TLS.CertFile != "" {
		scheme = "https"
	}
	return scheme + "://" + c.Listen
}
