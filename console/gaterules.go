package console

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/mailpush/mailpush"
)

// GateRuleEditor reads and replaces the gate's ordered rules. The server's
// implementation validates them, stores them (a versioned list: a change
// made meanwhile elsewhere fails with EConflict), applies them to its gate
// at once and tells the other nodes.
type GateRuleEditor interface {
	GateRules(ctx context.Context) ([]mailpush.GateRule, int64, error)
	SetGateRules(ctx context.Context, rules []mailpush.GateRule, version int64) (int64, error)
}

// DecisionLog keeps the gate's last decisions in a fixed ring. Add is
// called on the gate's request path, so it takes no lock: a slot is claimed
// with one atomic increment and filled with one atomic store. When full, the
// oldest decision is overwritten.
type DecisionLog struct {
	next  atomic.Uint64
	slots []atomic.Pointer[mailpush.GateDecisionRecord]
}

// NewDecisionLog keeps the last n decisions.
func NewDecisionLog(n int) *DecisionLog {
	return &DecisionLog{slots: make([]atomic.Pointer[mailpush.GateDecisionRecord], max(n, 1))}
}

// Add records a decision (gate.Deps.OnDecision).
func (l *DecisionLog) Add(r mailpush.GateDecisionRecord) {
	i := l.next.Add(1) - 1
	l.slots[i%uint64(len(l.slots))].Store(&r)
}

// Recent returns the kept decisions, newest first.
func (l *DecisionLog) Recent() []mailpush.GateDecisionRecord {
	n, size := l.next.Load(), uint64(len(l.slots))
	out := make([]mailpush.GateDecisionRecord, 0, min(n, size))
	for k := uint64(0); k < min(n, size); k++ {
		if r := l.slots[(n-1-k)%size].Load(); r != nil {
			out = append(out, *r)
		}
	}
	return out
}

// ruleView is a rule as the gate page lists it.
type ruleView struct {
	Index              int
	Name, Action, What string
	First, Last        bool
}

func describeRule(r mailpush.GateRule) string {
	var parts []string
	add := func(name string, v []string) {
		if len(v) > 0 {
			parts = append(parts, name+" "+strings.Join(v, ", "))
		}
	}
	add("networks", r.Networks)
	add("deviceTypes", r.DeviceTypes)
	add("commands", r.Commands)
	add("deviceIds", r.DeviceIDs)
	if len(r.UserHashes) > 0 {
		parts = append(parts, fmt.Sprintf("users: %d (kept as keyed hashes)", len(r.UserHashes)))
	}
	if r.UserAgent != "" {
		parts = append(parts, "userAgent ~ "+r.UserAgent)
	}
	return strings.Join(parts, "; ")
}

func ruleViews(rules []mailpush.GateRule) []ruleView {
	out := make([]ruleView, len(rules))
	for i, r := range rules {
		out[i] = ruleView{Index: i, Name: r.Name, Action: r.Action, What: describeRule(r), First: i == 0, Last: i == len(rules)-1}
	}
	return out
}

// gateTenantVisible: the gate serves one tenant; its rules and decisions
// are that tenant's (and the operators').
func (c *Console) gateTenantVisible(sess *session) bool {
	return c.cfg.Gate != nil && c.mayChange(sess, c.cfg.Gate.TenantID)
}

// splitList reads a form field of values separated by commas or spaces.
func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' })
}

// gateRuleAction adds, removes or moves a rule. The form carries the
// version of the list it was shown, so that two administrators' edits do
// not silently undo each other.
func (c *Console) gateRuleAction(w http.ResponseWriter, r *http.Request, sess *session) {
	ed := c.gateRules()
	if ed == nil {
		c.fail(w, r, http.StatusNotFound, "no_gate", "the gate is off on this server: there are no rules to edit")
		return
	}
	if !c.gateTenantVisible(sess) {
		c.fail(w, r, http.StatusForbidden, "forbidden", "this session administers another tenant than the gate's")
		return
	}
	op := r.PathValue("op")
	version, err := strconv.ParseInt(r.PostFormValue("version"), 10, 64)
	if err != nil || version < 0 {
		c.fail(w, r, http.StatusBadRequest, "invalid_version", "the form's version field is missing or not a number: reload the gate page")
		return
	}
	ctx := r.Context()
	rules, current, err := ed.GateRules(ctx)
	if err != nil {
		c.fail(w, r, http.StatusInternalServerError, "store", mailpush.ErrorMessage(err))
		return
	}
	if current != version {
		c.fail(w, r, http.StatusConflict, "conflict", "the gate rules were changed meanwhile (by another administrator or node): reload the gate page and try again")
		return
	}
	var target, detail string
	if op == "add" {
		nr := mailpush.GateRule{Name: strings.TrimSpace(r.PostFormValue("name")), Action: r.PostFormValue("action"),
			Networks: splitList(r.PostFormValue("networks")), DeviceTypes: splitList(r.PostFormValue("deviceTypes")),
			Commands: splitList(r.PostFormValue("commands")), UserAgent: r.PostFormValue("userAgent")}
		if nr.Name == "" {
			c.fail(w, r, http.StatusBadRequest, "invalid_rule", "the rule needs a name")
			return
		}
		if slices.ContainsFunc(rules, func(o mailpush.GateRule) bool { return o.Name == nr.Name }) {
			c.fail(w, r, http.StatusBadRequest, "invalid_rule", fmt.Sprintf("there is already a rule named %q", nr.Name))
			return
		}
		pos := len(rules)
		if p := r.PostFormValue("position"); p != "" {
			if pos, err = strconv.Atoi(p); err != nil || pos < 0 || pos > len(rules) {
				c.fail(w, r, http.StatusBadRequest, "invalid_position", fmt.Sprintf("position must be 0 to %d", len(rules)))
				return
			}
		}
		rules = slices.Insert(rules, pos, nr)
		target, detail = nr.Name, fmt.Sprintf("added at %d: %s %s", pos, nr.Action, describeRule(nr))
	} else {
		i, err := strconv.Atoi(r.PathValue("index"))
		if err != nil || i < 0 || i >= len(rules) {
			c.fail(w, r, http.StatusNotFound, "not_found", fmt.Sprintf("no rule at position %q", r.PathValue("index")))
			return
		}
		target = rules[i].Name
		switch op {
		case "remove":
			detail = fmt.Sprintf("removed from %d: %s %s", i, rules[i].Action, describeRule(rules[i]))
			rules = slices.Delete(rules, i, i+1)
		case "up", "down":
			j := i - 1
			if op == "down" {
				j = i + 1
			}
			if j < 0 || j >= len(rules) {
				c.fail(w, r, http.StatusBadRequest, "invalid_move", fmt.Sprintf("rule %q is already the %s", target, map[string]string{"up": "first", "down": "last"}[op]))
				return
			}
			rules[i], rules[j] = rules[j], rules[i]
			detail = fmt.Sprintf("moved from %d to %d", i, j)
		default:
			c.fail(w, r, http.StatusNotFound, "not_found", "a rule can be removed or moved up or down")
			return
		}
	}
	if _, err := ed.SetGateRules(ctx, rules, version); err != nil {
		status, code := http.StatusInternalServerError, "store"
		switch mailpush.ErrorCode(err) {
		case mailpush.EInvalid:
			status, code = http.StatusBadRequest, "invalid_rule"
		case mailpush.EConflict:
			status, code = http.StatusConflict, "conflict"
		}
		c.fail(w, r, status, code, mailpush.ErrorMessage(err))
		return
	}
	c.audit(ctx, sess, c.cfg.Gate.TenantID, "gate.rule."+op, target, detail)
	http.Redirect(w, r, "/admin/gate?done=rule+"+op+"+done", http.StatusSeeOther)
}

func (c *Console) gateRules() GateRuleEditor {
	if c.cfg.Gate == nil {
		return nil
	}
	return c.cfg.Gate.Rules
}
