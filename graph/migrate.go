package graph

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
)

// The EWS to Graph cut-over (`mailpush tenant migrate NAME --to graph`).
//
// It runs in the server, in the background, one per tenant at a time: the
// new subscriptions' validation handshakes reach any node's webhooks
// (answered while the store says a creation is under way), and the
// mailboxes' addresses are in the store, sealed (Mailbox.StoredAddress:
// kept since registration, or stored by the EWS source from the callback
// URL of a mailbox's next notification; Addresses, the EWS source's
// memory, covers a mailbox heard here before that).
//
// For each of the tenant's live EWS mailboxes, in this order:
//
//  1. Its address must be known (else it stays: address_unknown, stored
//     with its next EWS notification; device-subscribed mailboxes never
//     say it) and Graph must know the user (GET users/{id}; a 404 stays:
//     not_in_graph).
//  2. The Graph mailbox of the same address is found or made, and its
//     subscription created and validated (paced by the Graph engine's rate,
//     shared with renewals) unless it has a live one already.
//  3. Only then the registrations move to it, in one transaction, keeping
//     their IDs; the EWS mailbox becomes inactive, so its subscription's
//     next notification is answered Unsubscribe (EWS has no other way to
//     end a push subscription).
//  4. The badge is pushed from Graph's unreadItemCount: a mail that arrived
//     before the Graph subscription was live and whose EWS notification
//     came after the move (answered Unsubscribe) is counted in it. A mail
//     after the move comes through Graph; one in between may come through
//     both (at least once: a duplicate, never a miss).
//
// A second run (or one after a crash) does only what is left: a moved
// mailbox is inactive on EWS and not listed again; a Graph mailbox whose
// subscription is live is not subscribed again. A crash between steps 2
// and 3 leaves a live subscription that the next run uses; between 3 and 4
// it loses only that one badge push.

// AddressBook tells the address of a mailbox of another source that this
// process knows (the EWS source).
type AddressBook interface {
	KnownAddress(mailboxID string) (string, bool)
}

const (
	migrationWorkers = 8
	migrationPage    = 500
)

type migrationJob struct {
	dryRun bool
	mu     sync.Mutex
	report mailpush.MigrationReport
	done   chan struct{}
}

func (j *migrationJob) snapshot() *mailpush.MigrationReport {
	j.mu.Lock()
	defer j.mu.Unlock()
	r := j.report
	r.Stayed = append([]mailpush.MigrationStay(nil), r.Stayed...)
	return &r
}

func (j *migrationJob) update(f func(r *mailpush.MigrationReport)) {
	j.mu.Lock()
	defer j.mu.Unlock()
	f(&j.report)
}

var _ mailpush.Migrator = (*Source)(nil)

// StartMigration starts moving the tenant's EWS mailboxes to Graph in the
// background (see above), or returns the run in progress.
func (s *Source) StartMigration(ctx context.Context, t *mailpush.Tenant, to mailpush.Source, dryRun bool) (*mailpush.MigrationReport, error) {
	if to != mailpush.SourceGraph {
		return nil, mailpush.Errorf(mailpush.EInvalid, "to must be graph: mailboxes move only from EWS to Microsoft Graph, not to %q", to)
	}
	ta, err := s.app(t.Name)
	if err != nil {
		return nil, err
	}
	st := s.init()
	st.mu.Lock()
	defer st.mu.Unlock()
	if j, ok := st.migrations[t.ID]; ok {
		select {
		case <-j.done:
		default:
			r := j.snapshot()
			if r.DryRun != dryRun {
				return nil, mailpush.Errorf(mailpush.EConflict, "a migration of tenant %s (dry run: %v) is running: wait for it to end", t.Name, r.DryRun)
			}
			return r, nil
		}
	}
	j := &migrationJob{dryRun: dryRun, done: make(chan struct{}), report: mailpush.MigrationReport{
		Tenant: t.Name, To: mailpush.SourceGraph, DryRun: dryRun, State: mailpush.MigrationRunning, StartedAt: s.Clock.Now().UTC()}}
	st.migrations[t.ID] = j
	r := j.snapshot()
	jobCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	st.jobs.Add(1)
	st.jobCancels = append(st.jobCancels, cancel)
	go func() {
		defer st.jobs.Done()
		defer cancel()
		err := s.migrate(jobCtx, ta, t, j)
		j.update(func(r *mailpush.MigrationReport) {
			r.State, r.FinishedAt = mailpush.MigrationDone, s.Clock.Now().UTC()
			if err != nil {
				r.State, r.Error = mailpush.MigrationFailed, mailpush.ErrorMessage(err)
			}
		})
		log := s.Logger.With("tenant", t.ID, "dryRun", dryRun)
		if err != nil {
			log.Error("migration to Graph stopped; run it again to finish", "err", err)
		} else {
			fin := j.snapshot()
			log.Info("migration to Graph done", "mailboxes", fin.Mailboxes, "migrated", fin.Migrated, "stayed", len(fin.Stayed), "registrations", fin.MovedRegistrations)
		}
		close(j.done)
	}()
	s.Logger.Info("migration to Graph started", "tenant", t.ID, "dryRun", dryRun)
	return r, nil
}

// Migration returns the tenant's current or last migration, once it is
// done or wait has passed (a long poll for the CLI).
func (s *Source) Migration(ctx context.Context, t *mailpush.Tenant, to mailpush.Source, wait time.Duration) (*mailpush.MigrationReport, error) {
	if to != mailpush.SourceGraph {
		return nil, mailpush.Errorf(mailpush.EInvalid, "to must be graph, not %q", to)
	}
	st := s.init()
	st.mu.Lock()
	j, ok := st.migrations[t.ID]
	st.mu.Unlock()
	if !ok {
		return nil, mailpush.Errorf(mailpush.ENotFound, "no migration of tenant %s to graph since the server started", t.Name)
	}
	if wait > 0 {
		ctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		select {
		case <-j.done:
		case <-ctx.Done():
		}
	}
	return j.snapshot(), nil
}

// migrate lists the tenant's live EWS mailboxes page by page and moves
// them with a few workers.
func (s *Source) migrate(ctx context.Context, ta *tenantApp, t *mailpush.Tenant, j *migrationJob) error {
	work := make(chan *mailpush.Mailbox)
	var wg sync.WaitGroup
	for range migrationWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range work {
				s.migrateMailbox(ctx, ta, t, e, j)
			}
		}()
	}
	err := func() error {
		defer close(work)
		after := ""
		for {
			page, err := s.Store.TenantMailboxes(ctx, t.ID, mailpush.SourceEWS, after, migrationPage)
			if err != nil {
				return err
			}
			if len(page) == 0 {
				return nil
			}
			for _, e := range page {
				aud, err := s.Store.MailboxAudience(ctx, e.ID)
				if err != nil {
					return err
				}
				j.update(func(r *mailpush.MigrationReport) { r.Mailboxes++; r.Registrations += aud.Registrations })
				select {
				case work <- e:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			after = page[len(page)-1].ID
		}
	}()
	wg.Wait()
	return err
}

// errNotInGraph: Graph answered 404 for the user.
var errNotInGraph = errors.New("Graph does not know the user (404 on users/{id})")

// migrateMailbox moves one EWS mailbox (steps 1 to 4 above) and records
// the outcome.
func (s *Source) migrateMailbox(ctx context.Context, ta *tenantApp, t *mailpush.Tenant, e *mailpush.Mailbox, j *migrationJob) {
	log := s.Logger.With("mailbox", e.ID, "tenant", t.ID)
	stay := func(reason, detail string) {
		log.Info("mailbox stays on EWS", "reason", reason, "detail", detail)
		j.update(func(r *mailpush.MigrationReport) {
			r.Stayed = append(r.Stayed, mailpush.MigrationStay{MailboxID: e.ID, AddressID: e.AddressID(), Reason: reason, Detail: detail})
		})
	}
	if e.Mode == mailpush.ModeDeviceSubscribed {
		stay(mailpush.StayDeviceSubscribed, "the device subscribed on Exchange itself: mailpush never learns the address; the app must register with source graph")
		return
	}
	address := e.StoredAddress
	if address == "" && s.Addresses != nil {
		address, _ = s.Addresses.KnownAddress(e.ID)
	}
	if address == "" {
		stay(mailpush.StayAddressUnknown, "the address is not stored yet (a mailbox registered before addresses were kept): it is stored with its next EWS notification (within ews.statusFrequency); run the migration again then")
		return
	}
	if !hmac.Equal(s.Hasher.HashAddress(t.ID, address), e.AddressHash) {
		stay(mailpush.StayFailed, "the known address does not match the mailbox")
		return
	}
	var known bool
	err := s.call(ctx, ta, e.ID, func(ctx context.Context) error {
		var err error
		known, err = ta.client.UserExists(ctx, address)
		return err
	})
	j.update(func(r *mailpush.MigrationReport) { r.GraphReads++ })
	if err == nil && !known {
		err = errNotInGraph
	}
	switch {
	case errors.Is(err, errNotInGraph):
		stay(mailpush.StayNotInTarget, err.Error())
		return
	case err != nil:
		stay(mailpush.StayFailed, lookupFailure(err))
		return
	}
	if j.dryRun {
		aud, err := s.Store.MailboxAudience(ctx, e.ID)
		if err != nil {
			stay(mailpush.StayFailed, mailpush.ErrorMessage(err))
			return
		}
		j.update(func(r *mailpush.MigrationReport) { r.Migrated++; r.MovedRegistrations += aud.Registrations })
		return
	}
	moved, wrote, err := s.cutOver(ctx, ta, t, e, address)
	j.update(func(r *mailpush.MigrationReport) { r.GraphWrites += wrote })
	if err != nil {
		stay(mailpush.StayFailed, mailpush.ErrorMessage(err))
		return
	}
	j.update(func(r *mailpush.MigrationReport) { r.Migrated++; r.MovedRegistrations += moved })
	log.Info("mailbox moved from EWS to Graph", "registrations", moved)
}

// cutOver does steps 2 to 4 for one mailbox: the Graph subscription live
// first, then the registrations, then the badge. wrote counts the
// subscriptions it created.
func (s *Source) cutOver(ctx context.Context, ta *tenantApp, t *mailpush.Tenant, e *mailpush.Mailbox, address string) (moved, wrote int, err error) {
	now := s.Clock.Now()
	g, err := s.Store.EnsureMailbox(ctx, &mailpush.Mailbox{TenantID: t.ID, AddressHash: e.AddressHash, Source: mailpush.SourceGraph,
		Mode: mailpush.ModeService, Badge: e.Badge, Seq: e.Seq, Status: mailpush.StatusPending, LastEventAt: now, Address: address})
	if err != nil {
		return 0, 0, err
	}
	g.Address = address
	if g.Status != mailpush.StatusActive || g.SubscriptionID == "" {
		if err := s.Engine.Pace(ctx); err != nil {
			return 0, 0, err
		}
		wrote = 1
		if err := s.subscribe(ctx, ta, g, address); err != nil {
			s.abandon(ctx, g.ID)
			return 0, wrote, err
		}
	}
	// The new subscription is live: only now do the devices leave EWS.
	moved, err = s.Store.MoveRegistrations(ctx, e.ID, g.ID)
	if err != nil {
		return 0, wrote, err
	}
	s.resync(ctx, ta, t.ID, g.ID, address, mailpush.EventChanged)
	return moved, wrote, nil
}

// abandon makes a Graph mailbox that the cut-over made but could not
// subscribe inactive again while no registration uses it, so that the
// engine does not keep a subscription alive for nobody.
func (s *Source) abandon(ctx context.Context, mailboxID string) {
	aud, err := s.Store.MailboxAudience(ctx, mailboxID)
	if err != nil || aud.Registrations > 0 {
		return
	}
	s.Store.UpdateMailbox(ctx, mailboxID, func(m *mailpush.Mailbox) error {
		if m.Status == mailpush.StatusPending {
			m.Status = mailpush.StatusInactive
		}
		return nil
	})
}

// lookupFailure says why a user lookup failed without Graph's message or
// the request's URL: both may name the address, and this goes to the log
// and the report.
func lookupFailure(err error) string {
	var ge *Error
	switch {
	case errors.As(err, &ge):
		return fmt.Sprintf("user lookup: Graph answered HTTP %d %s", ge.Status, ge.Code)
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return "user lookup: stopped (the server is shutting down or Graph did not answer in time)"
	}
	return "user lookup: Graph could not be reached"
}
