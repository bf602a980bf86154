package subscription

import (
	"slices"
	"sync"

	"github.com/mailpush/mailpush"
)

// healsKept is how many ended heals Healing lists (the admin console).
const healsKept = 50

// healBook records the heals running and the last ones that ended, for
// Healing. Running heals are bounded by Workers per sweep; ended ones by a
// ring of healsKept.
type healBook struct {
	mu      sync.Mutex
	running map[string]*mailpush.HealRecord // by mailbox ID
	ended   []mailpush.HealRecord           // ring, oldest overwritten
	next    int
}

func (b *healBook) begin(r mailpush.HealRecord) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.running == nil {
		b.running = map[string]*mailpush.HealRecord{}
	}
	b.running[r.MailboxID] = &r
}

func (b *healBook) end(r mailpush.HealRecord) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.running, r.MailboxID)
	if len(b.ended) < healsKept {
		b.ended = append(b.ended, r)
		return
	}
	b.ended[b.next] = r
	b.next = (b.next + 1) % healsKept
}

// Healing returns the heals running now (oldest first) and the last ones
// that ended (newest first), on this node.
func (e *Engine) Healing() (running, ended []mailpush.HealRecord) {
	b := &e.init().heals
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range b.running {
		running = append(running, *r)
	}
	slices.SortFunc(running, func(a, b mailpush.HealRecord) int { return a.Started.Compare(b.Started) })
	ended = slices.Clone(b.ended)
	slices.SortStableFunc(ended, func(a, b mailpush.HealRecord) int { return b.Ended.Compare(a.Ended) })
	return running, ended
}
