package ewsfake

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// EWS event types, as element names.
const (
	statusEvent   = "StatusEvent"
	newMailEvent  = "NewMailEvent"
	createdEvent  = "CreatedEvent"
	deletedEvent  = "DeletedEvent"
	modifiedEvent = "ModifiedEvent"
	movedEvent    = "MovedEvent"
	copiedEvent   = "CopiedEvent"
	freeBusyEvent = "FreeBusyChangedEvent"
)

// eventLogSize is how many past events a mailbox keeps so that Subscribe
// with a watermark can replay what came after it; an older watermark is
// refused with ErrorInvalidWatermark, like one older than Exchange's 30 days.
const eventLogSize = 10_000

type mailbox struct {
	n                          uint32 // number in watermarks
	address, username          string
	password                   string
	ntlmOnly                   bool            // Basic refused: NTLM only, the on-premises default
	impersonator               bool            // holds the ApplicationImpersonation role
	delegates                  map[string]bool // lower-cased addresses of users given access (full access)
	rootID, inboxID, deletedID string
	items                      map[string]*item
	unread                     int
	seq                        uint64 // sequence of the last event: the current watermark
	log                        []event
	subs                       map[string]*subscription // active ones
}

type item struct {
	id, changeKey                  string
	subject, fromName, fromAddress string
	read                           bool
}

// event is a mailbox event; unread is -1 when it carries no UnreadCount.
type event struct {
	typ                                 string
	watermark                           string
	at                                  time.Time
	itemID, folderID, parentID          string
	oldItemID, oldFolderID, oldParentID string
	unread                              int
}

// randomID returns an opaque base64 identifier that starts like Exchange's.
func randomID(prefix string, n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails
	return prefix + base64.StdEncoding.EncodeToString(b)
}

func watermark(mbx uint32, seq uint64) string {
	var b [16]byte
	b[0] = 1
	copy(b[1:4], "ewf")
	binary.LittleEndian.PutUint32(b[4:], mbx)
	binary.LittleEndian.PutUint64(b[8:], seq)
	return base64.StdEncoding.EncodeToString(b[:])
}

func parseWatermark(s string) (mbx uint32, seq uint64, ok bool) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != 16 || b[0] != 1 || string(b[1:4]) != "ewf" {
		return 0, 0, false
	}
	return binary.LittleEndian.Uint32(b[4:]), binary.LittleEndian.Uint64(b[8:]), true
}

// current returns the mailbox's current watermark.
func (mb *mailbox) current() string { return watermark(mb.n, mb.seq) }

// since returns the logged events after watermark wm, false when wm is not
// this mailbox's or too old to replay.
func (mb *mailbox) since(wm string) ([]event, bool) {
	n, seq, ok := parseWatermark(wm)
	if !ok || n != mb.n || seq > mb.seq || mb.seq-seq > uint64(len(mb.log)) {
		return nil, false
	}
	return mb.log[len(mb.log)-int(mb.seq-seq):], true
}

func (mb *mailbox) event(typ string, at time.Time) event {
	mb.seq++
	return event{typ: typ, watermark: mb.current(), at: at, unread: -1}
}

func (mb *mailbox) itemEvent(typ string, at time.Time, it *item) event {
	ev := mb.event(typ, at)
	ev.itemID, ev.parentID = it.id, mb.inboxID
	return ev
}

// folderEvent is the ModifiedEvent on the Inbox that carries UnreadCount.
func (mb *mailbox) folderEvent(at time.Time) event {
	ev := mb.event(modifiedEvent, at)
	ev.folderID, ev.parentID, ev.unread = mb.inboxID, mb.rootID, mb.unread
	return ev
}

func (mb *mailbox) checkPassword(p string) bool {
	return subtle.ConstantTimeCompare([]byte(p), []byte(mb.password)) == 1
}

// AddUser creates the mailbox address, reachable with Basic auth as username
// (or as the address itself) and password. Adding an existing address
// changes its username and password and keeps its mail.
func (s *Server) AddUser(address, username, password string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mb, ok := s.mailboxes[lower(address)]
	if ok {
		delete(s.logins, lower(mb.username))
	} else {
		mb = &mailbox{
			n:         uint32(len(s.mailboxes) + 1),
			address:   address,
			rootID:    randomID("AQMkA", 36),
			inboxID:   randomID("AQMkA", 36),
			deletedID: randomID("AQMkA", 36),
			items:     make(map[string]*item),
			subs:      make(map[string]*subscription),
		}
		s.mailboxes[lower(address)] = mb
		s.logins[lower(address)] = mb
	}
	mb.username, mb.password = username, password
	if username != "" {
		s.logins[lower(username)] = mb
	}
	s.notifyLocked()
}

// AddDelegate gives the user of delegate access to owner's mailbox, as
// Exchange's full-access permission does: then delegate's credentials may
// name owner's Inbox (t:Mailbox/t:EmailAddress) in Subscribe and GetFolder.
func (s *Server) AddDelegate(owner, delegate string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	mb, err := s.mailboxLocked(owner)
	if err != nil {
		return err
	}
	if _, err := s.mailboxLocked(delegate); err != nil {
		return err
	}
	if mb.delegates == nil {
		mb.delegates = map[string]bool{}
	}
	mb.delegates[lower(delegate)] = true
	return nil
}

// openAs returns the mailbox a request names (t:Mailbox/t:EmailAddress in a
// folder ID) as the caller may open it, as Exchange decides: the caller's
// own when address is empty or its own, a mailbox it is a delegate of, and
// otherwise the response code Exchange answers: ErrorNonExistentMailbox for
// an address without a mailbox, ErrorAccessDenied for another's.
func (s *Server) openAs(caller *mailbox, address string) (*mailbox, string) {
	if address == "" || strings.EqualFold(address, caller.address) {
		return caller, ""
	}
	target, err := s.mailboxLocked(address)
	if err != nil {
		return nil, "ErrorNonExistentMailbox"
	}
	if !target.delegates[lower(caller.address)] {
		return nil, "ErrorAccessDenied"
	}
	return target, ""
}

func (s *Server) mailboxLocked(address string) (*mailbox, error) {
	mb, ok := s.mailboxes[lower(address)]
	if !ok {
		return nil, fmt.Errorf("mailbox: %w", ErrNotFound)
	}
	return mb, nil
}

func (s *Server) itemLocked(address, itemID string) (*mailbox, *item, error) {
	mb, err := s.mailboxLocked(address)
	if err != nil {
		return nil, nil, err
	}
	it, ok := mb.items[itemID]
	if !ok {
		return nil, nil, fmt.Errorf("item: %w", ErrNotFound)
	}
	return mb, it, nil
}

// Deliver puts a new unread message in the Inbox of address and returns its
// item ID, or "" when there is no such mailbox. Each subscription of the
// mailbox gets a NewMailEvent and a CreatedEvent for the item and a
// ModifiedEvent on the Inbox with the new UnreadCount.
func (s *Server) Deliver(address, subject, fromName, fromAddress string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	mb, err := s.mailboxLocked(address)
	if err != nil {
		return ""
	}
	it := &item{
		id:          randomID("AAMkA", 105),
		changeKey:   randomID("CQAAABYA", 12),
		subject:     subject,
		fromName:    fromName,
		fromAddress: fromAddress,
	}
	mb.items[it.id] = it
	mb.unread++
	now := time.Now().UTC()
	s.recordLocked(mb,
		mb.itemEvent(newMailEvent, now, it),
		mb.itemEvent(createdEvent, now, it),
		mb.folderEvent(now))
	return it.id
}

// MarkRead sets the read state of an item, as a user reading it on another
// device does: a ModifiedEvent on the item and one on the Inbox with the new
// UnreadCount. Setting the state it already has changes nothing.
func (s *Server) MarkRead(address, itemID string, read bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	mb, it, err := s.itemLocked(address, itemID)
	if err != nil {
		return err
	}
	if it.read == read {
		return nil
	}
	it.read = read
	if read {
		mb.unread--
	} else {
		mb.unread++
	}
	it.changeKey = randomID("CQAAABYA", 12)
	now := time.Now().UTC()
	s.recordLocked(mb, mb.itemEvent(modifiedEvent, now, it), mb.folderEvent(now))
	return nil
}

// Delete removes an item for good (shift-delete): a DeletedEvent and a
// ModifiedEvent on the Inbox with the new UnreadCount.
func (s *Server) Delete(address, itemID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	mb, it, err := s.itemLocked(address, itemID)
	if err != nil {
		return err
	}
	s.removeLocked(mb, it)
	now := time.Now().UTC()
	s.recordLocked(mb, mb.itemEvent(deletedEvent, now, it), mb.folderEvent(now))
	return nil
}

// SoftDelete moves an item to Deleted Items, as a client's delete does: a
// MovedEvent whose ItemId is the item's new ID in Deleted Items (returned)
// and whose OldItemId and OldParentFolderId are the Inbox ones, then a
// ModifiedEvent on the Inbox with the new UnreadCount. The fake keeps only
// the Inbox: the moved item is gone from its point of view.
func (s *Server) SoftDelete(address, itemID string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mb, it, err := s.itemLocked(address, itemID)
	if err != nil {
		return "", err
	}
	s.removeLocked(mb, it)
	now := time.Now().UTC()
	moved := mb.event(movedEvent, now)
	moved.itemID, moved.parentID = randomID("AAMkA", 105), mb.deletedID
	moved.oldItemID, moved.oldParentID = it.id, mb.inboxID
	s.recordLocked(mb, moved, mb.folderEvent(now))
	return moved.itemID, nil
}

func (s *Server) removeLocked(mb *mailbox, it *item) {
	delete(mb.items, it.id)
	if !it.read {
		mb.unread--
	}
}

// recordLocked logs events of mb and queues them for its subscriptions.
func (s *Server) recordLocked(mb *mailbox, evs ...event) {
	mb.log = append(mb.log, evs...)
	if over := len(mb.log) - eventLogSize; over > 0 {
		mb.log = append(mb.log[:0], mb.log[over:]...)
	}
	for _, sub := range mb.subs {
		if dropped := sub.enqueueLocked(evs, s.queueSize); dropped > 0 {
			s.log.Warn("ewsfake queue full: oldest events dropped", "subscription", sub.id, "dropped", dropped)
		}
	}
	s.notifyLocked()
}

// Unread returns the Inbox unread count of address, -1 when there is no such
// mailbox.
func (s *Server) Unread(address string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	mb, err := s.mailboxLocked(address)
	if err != nil {
		return -1
	}
	return mb.unread
}

// AddNTLMUser is AddUser for a user who can log in with NTLM only, as on an
// Exchange whose EWS virtual directory has Basic authentication off.
func (s *Server) AddNTLMUser(address, username, password string) {
	s.AddUser(address, username, password)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mailboxes[lower(address)].ntlmOnly = true
}

// AllowImpersonation gives the user (an address or username) the
// ApplicationImpersonation role: its requests may carry
// ExchangeImpersonation for any mailbox of the server.
func (s *Server) AllowImpersonation(login string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	mb := s.logins[lower(login)]
	if mb == nil {
		return fmt.Errorf("user %q: %w", login, ErrNotFound)
	}
	mb.impersonator = true
	return nil
}
