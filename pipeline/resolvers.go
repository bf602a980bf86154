package pipeline

import (
	"context"
	"log/slog"
	"sync"

	"github.com/mailpush/mailpush"
)

// Mailboxes reads a mailbox (the store's role SourceResolvers needs).
type Mailboxes interface {
	Mailbox(ctx context.Context, id string) (*mailpush.Mailbox, error)
}

// SourceResolvers is the pipeline's Resolver when several sources
// acknowledge before fetching (Microsoft Graph, EWS): it hands each
// unresolved event to the Resolver of its mailbox's source.
//
// The event row does not name its source; the mailbox does (a mailbox is
// one address of one source), so the route costs one indexed read of the
// mailbox per unresolved event, in the resolver workers after the claim,
// never on a webhook's path. Storing the source in every event row was
// rejected: a schema change in every store for what the mailbox already
// says.
//
// Set may be called while the pipeline runs (the sources are made after
// it); an event of a source without a resolver is fanned out as it was
// stored (what the source knew when it acknowledged: a background push
// when that was no badge), so that nothing waits forever for a source that
// is no longer configured. Main wires every source before it starts
// the pipeline.
type SourceResolvers struct {
	Mailboxes Mailboxes
	Logger    *slog.Logger

	mu sync.RWMutex
	by map[mailpush.Source]Resolver
}

var _ Resolver = (*SourceResolvers)(nil)

// Set makes r the resolver of source's events.
func (s *SourceResolvers) Set(source mailpush.Source, r Resolver) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.by == nil {
		s.by = map[mailpush.Source]Resolver{}
	}
	s.by[source] = r
}

// Resolve routes oe to its mailbox's source. A mailbox that is gone has no
// device left to push to: the event goes on as it was stored.
func (s *SourceResolvers) Resolve(ctx context.Context, oe *mailpush.OutboxEvent) error {
	mb, err := s.Mailboxes.Mailbox(ctx, oe.Event.MailboxID)
	if mailpush.ErrorCode(err) == mailpush.ENotFound {
		return nil
	}
	if err != nil {
		return err
	}
	s.mu.RLock()
	r := s.by[mb.Source]
	s.mu.RUnlock()
	if r == nil {
		if s.Logger != nil {
			s.Logger.Warn("outbox: no resolver for the event's source: pushed as it was stored", "source", mb.Source, "mailbox", mb.ID)
		}
		return nil
	}
	return r.Resolve(ctx, oe)
}
