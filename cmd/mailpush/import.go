package main

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/api"
	"github.com/mailpush/mailpush/registrar"
)

// importRow is one valid line of a registrations import.
type importRow struct {
	line    int
	device  mailpush.Device
	address string
	content mailpush.ContentMode
}

// maxImportErrors is how many bad lines an import names before it stops
// reading.
const maxImportErrors = 20

// runRegistrationsImport is "mailpush registrations import FILE --tenant
// NAME": the bulk path for a tenant moving its devices from another product,
// straight into the store with progress on stderr. Rows are checked with the
// device API's own rules first; a file with any bad row writes nothing.
//
// Only source dovecot can be imported: a Dovecot mailbox is watched with the
// tenant's shared secret (service mode), so a registration needs nothing
// from the user and is active at once, as the API makes it. An EWS or Graph
// registration needs the user's sealed credentials or the device's own
// subscription: the app registers those itself.
func runRegistrationsImport(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) error {
	fs := newFlags("registrations import", "registrations import FILE --tenant NAME [--config FILE]   (CSV: platform,token,address[,content[,environment]])", stdout, stderr)
	path := configFlag(fs, environ)
	tenant := fs.String("tenant", "", "the tenant whose registrations these are (it must have a Dovecot configuration)")
	workers := fs.Int("concurrency", 32, "registrations written at once (they share transactions)")
	pos, err := parseFlags(fs, args, "FILE")
	if err != nil {
		return err
	}
	file := pos[0]
	if *tenant == "" {
		return usageError{"registrations import: --tenant NAME is required (see mailpush registrations import --help)"}
	}
	if *workers < 1 {
		return usageError{"registrations import: --concurrency must be at least 1"}
	}
	m, err := openAdmin(ctx, *path, environ, stderr)
	if err != nil {
		return err
	}
	defer m.Close()
	if tc, ok := m.Config.Tenants[*tenant]; !ok || tc.Dovecot == nil {
		return fmt.Errorf("registrations import: tenant %q has no Dovecot configuration (tenants.%s.dovecot): only Dovecot registrations can be imported; apps register EWS and Graph mailboxes themselves", *tenant, *tenant)
	}
	t, err := m.Store.TenantByName(ctx, *tenant)
	if err != nil {
		return fmt.Errorf("registrations import: tenant %q: %w", *tenant, err)
	}
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("registrations import: %w", err)
	}
	defer f.Close()
	rows, err := readImport(f, t)
	if err != nil {
		return fmt.Errorf("registrations import: %s: %w (nothing was imported)", file, err)
	}

	start := time.Now()
	var done atomic.Int64
	progress := func(final bool) {
		n := done.Load()
		el := time.Since(start)
		fmt.Fprintf(stderr, "\rimported %d/%d registrations (%.0f%%, %.0f/s)", n, len(rows), 100*float64(n)/float64(max(1, len(rows))), float64(n)/max(el.Seconds(), 1e-3))
		if final {
			fmt.Fprintf(stderr, " in %v\n", el.Round(time.Millisecond))
		}
	}
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-tick.C:
				progress(false)
			}
		}
	}()
	jobs := make(chan importRow)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	expires := m.Clock.Now().UTC().Add(m.Config.RegistrationTTL)
	for range *workers {
		wg.Go(func() {
			for r := range jobs {
				mb := &mailpush.Mailbox{TenantID: t.ID, AddressHash: m.Keys.HashAddress(t.ID, r.address), Source: mailpush.SourceDovecot,
					Mode: mailpush.ModeService, Badge: mailpush.NoBadge, Status: mailpush.StatusActive}
				reg := &mailpush.Registration{Device: r.device, Content: r.content, Status: mailpush.StatusActive, ExpiresAt: expires}
				if _, err := m.Store.Register(ctx, reg, mb, nil); err != nil {
					firstErr.CompareAndSwap(nil, fmt.Errorf("line %d: %w", r.line, err))
					continue
				}
				done.Add(1)
			}
		})
	}
	for _, r := range rows {
		if firstErr.Load() != nil {
			break
		}
		jobs <- r
	}
	close(jobs)
	wg.Wait()
	close(stopProgress)
	<-progressDone
	progress(true)
	if err, _ := firstErr.Load().(error); err != nil {
		return fmt.Errorf("registrations import: %w (%d of %d imported)", err, done.Load(), len(rows))
	}
	fmt.Fprintf(stdout, "%d registrations imported for tenant %s (source dovecot, active)\n", done.Load(), t.Name)
	return nil
}

// readImport reads and checks every row; it returns the bad lines' reasons
// (up to maxImportErrors) when there is any.
func readImport(r io.Reader, t *mailpush.Tenant) ([]importRow, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	var rows []importRow
	var bad []string
	line := 0
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		line++
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if line == 1 && len(rec) > 0 && strings.EqualFold(strings.TrimSpace(rec[0]), "platform") {
			continue // the header
		}
		row, err := parseImportRow(line, rec, t)
		if err != nil {
			bad = append(bad, fmt.Sprintf("line %d: %s", line, mailpush.ErrorMessage(err)))
			if len(bad) >= maxImportErrors {
				bad = append(bad, "(stopped reading)")
				break
			}
			continue
		}
		rows = append(rows, row)
	}
	if len(bad) > 0 {
		return nil, errors.New(strings.Join(bad, "\n  "))
	}
	if len(rows) == 0 {
		return nil, errors.New("no registrations in the file (CSV: platform,token,address[,content[,environment]])")
	}
	return rows, nil
}

func parseImportRow(line int, rec []string, t *mailpush.Tenant) (importRow, error) {
	if len(rec) < 3 || len(rec) > 5 {
		return importRow{}, mailpush.Errorf(mailpush.EInvalid, "want 3 to 5 fields (platform,token,address[,content[,environment]]), got %d", len(rec))
	}
	field := func(i int) string {
		if i < len(rec) {
			return strings.TrimSpace(rec[i])
		}
		return ""
	}
	dev, err := api.ParseDevice(field(0), field(1), field(4))
	if err != nil {
		return importRow{}, err
	}
	addr, err := registrar.ParseAddress(field(2))
	if err != nil {
		return importRow{}, err
	}
	content := mailpush.ContentBadge
	if c := field(3); c != "" {
		if content = mailpush.ContentMode(c); content.Rank() < 0 {
			return importRow{}, mailpush.Errorf(mailpush.EInvalid, "content must be badge, subject or subject_sender, not %q", c)
		}
	}
	return importRow{line: line, device: dev, address: addr, content: t.CapContent(content)}, nil
}
