package gate

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/mailpush/mailpush"
)

// Modes: what the registry's state means once no rule matched.
const (
	// ModeCompliantOnly admits only devices the MDM reported compliant.
	ModeCompliantOnly = "compliantOnly"
	// ModeAllButBlocked admits every device that is not blocked or wiped
	// (non-compliant ones included; add a rule to refine).
	ModeAllButBlocked = "allButBlocked"
)

// Config is the gate's configuration (the gate: key of mailpush.yaml).
type Config struct {
	// Tenant is the name of the tenant whose registry decides; the gate
	// serves one tenant, the one behind this reverse proxy.
	Tenant string `yaml:"tenant"`
	// Proxy names the reverse proxy that asks (nginx, caddy, traefik,
	// haproxy or netscaler), and with it which headers carry the original
	// request: the gate reads only those (Proxies). Required.
	Proxy string `yaml:"proxy"`
	// Identity says where the authenticated user is read and how user name
	// forms compare.
	Identity IdentityConfig `yaml:"identity"`
	// MinProtocolVersion, when set ("16.1"), denies requests of a lower
	// MS-ASProtocolVersion, and requests that do not say theirs.
	MinProtocolVersion string `yaml:"minProtocolVersion"`
	// Mode is compliantOnly (default) or allButBlocked.
	Mode string `yaml:"mode"`
	// DefaultAction (allow or deny) decides devices that no rule matched and
	// that the registry does not know (not registered, or state unknown).
	// Default: deny in compliantOnly mode, allow in allButBlocked mode.
	DefaultAction string `yaml:"defaultAction"`
	// FailMode (open or closed, default closed) decides when the registry
	// cannot answer and no rule matched. Every such decision is logged.
	FailMode string `yaml:"failMode"`
	// UserMustMatch denies a registered device used with another user than
	// the one the MDM reported (when both are known). Default true.
	UserMustMatch *bool `yaml:"userMustMatch"`
	// TrustedProxies are the addresses (CIDR) whose X-Forwarded-For and
	// Authorize ip= are believed. Default: loopback only.
	TrustedProxies []string `yaml:"trustedProxies"`
	// Rules are tried in order; the first that matches decides.
	Rules []Rule `yaml:"rules"`
	// CacheTTL bounds how long a registry answer is reused (default 10s).
	// Changes made through this process invalidate it at once.
	CacheTTL time.Duration `yaml:"cacheTtl"`
	// CacheSize caps the cached devices (default 100000).
	CacheSize int `yaml:"cacheSize"`
	// Audit is which decisions are logged: all (default), deny or off.
	Audit string `yaml:"audit"`
	// AuditIdentifiers is how DeviceIds and client addresses appear in the
	// audit log: hashed (default; keyed hashes, stable per tenant) or
	// clear (the log then says so on every line).
	AuditIdentifiers string `yaml:"auditIdentifiers"`
}

// Rule is one allow or block rule. It matches when every field that is set
// matches (a list matches when any of its entries does).
type Rule struct {
	Name        string   `yaml:"name"`
	Action      string   `yaml:"action"` // allow or deny
	Users       []string `yaml:"users"`
	DeviceIDs   []string `yaml:"deviceIds"`
	DeviceTypes []string `yaml:"deviceTypes"`
	UserAgent   string   `yaml:"userAgent"` // RE2 regular expression, unanchored
	Commands    []string `yaml:"commands"`
	Networks    []string `yaml:"networks"` // CIDR
}

// Policy is a validated, compiled Config. It is immutable and safe for
// concurrent use.
type Policy struct {
	id            *Identity
	minVersion    int // major*10+minor; 0: no floor
	compliantOnly bool
	defaultAllow  bool
	failOpen      bool
	userMustMatch bool
	rules         []rule
}

type rule struct {
	name        string
	allow       bool
	users       map[string]bool // the keyed hashes, as strings
	deviceIDs   map[string]bool
	deviceTypes map[string]bool // lower case
	userAgent   *regexp.Regexp
	commands    map[string]bool
	networks    []netip.Prefix
}

// Compile validates cfg; user names in rules are hashed with h for tenantID,
// so that the compiled policy holds no address in clear. Errors name the key.
func Compile(cfg Config, h mailpush.AddressHasher, tenantID string) (*Policy, error) {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config key gate.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	p := &Policy{userMustMatch: cfg.UserMustMatch == nil || *cfg.UserMustMatch}
	id, idErrs := CompileIdentity(cfg.Identity)
	p.id = id
	errs = append(errs, idErrs...)
	if cfg.MinProtocolVersion != "" {
		v, ok := protocolVersion(cfg.MinProtocolVersion)
		if !ok {
			bad("minProtocolVersion", "%q is not an ActiveSync protocol version such as 16.1", cfg.MinProtocolVersion)
		}
		p.minVersion = v
	}
	switch cfg.Mode {
	case "", ModeCompliantOnly:
		p.compliantOnly = true
	case ModeAllButBlocked:
	default:
		bad("mode", "%q must be %s or %s", cfg.Mode, ModeCompliantOnly, ModeAllButBlocked)
	}
	switch cfg.DefaultAction {
	case "":
		p.defaultAllow = !p.compliantOnly
	case "allow", "deny":
		p.defaultAllow = cfg.DefaultAction == "allow"
	default:
		bad("defaultAction", "%q must be allow or deny", cfg.DefaultAction)
	}
	switch cfg.FailMode {
	case "", "closed":
	case "open":
		p.failOpen = true
	default:
		bad("failMode", "%q must be open or closed", cfg.FailMode)
	}
	stored, ruleErrs := StoredRules(cfg.Rules, id, h, tenantID)
	errs = append(errs, ruleErrs...)
	rules, err := compileRules(stored, "config key gate.")
	if err != nil {
		errs = append(errs, err)
	}
	p.rules = rules
	return p, errors.Join(errs...)
}

// StoredRules turns the configuration's rules into the form in which rules
// are stored and edited: user names become keyed hashes of their canonical
// form (id), so that no address is kept. Errors name the key.
func StoredRules(rules []Rule, id *Identity, h mailpush.AddressHasher, tenantID string) ([]mailpush.GateRule, []error) {
	var errs []error
	out := make([]mailpush.GateRule, 0, len(rules))
	for i, rc := range rules {
		r := mailpush.GateRule{Name: rc.Name, Action: rc.Action, DeviceIDs: rc.DeviceIDs, DeviceTypes: rc.DeviceTypes,
			UserAgent: rc.UserAgent, Commands: rc.Commands, Networks: rc.Networks}
		if r.Name == "" {
			r.Name = fmt.Sprintf("rules[%d]", i)
		}
		for _, u := range rc.Users {
			cu, err := id.Canonical(u)
			if err != nil || cu == "" {
				errs = append(errs, fmt.Errorf("config key gate.rules[%d].users: a user name is empty or not a user name", i))
				continue
			}
			r.UserHashes = append(r.UserHashes, h.HashAddress(tenantID, cu))
		}
		out = append(out, r)
	}
	return out, errs
}

// compileRules validates and compiles stored rules; errors start with
// prefix and name the rule and its field.
func compileRules(rules []mailpush.GateRule, prefix string) ([]rule, error) {
	var errs []error
	out := make([]rule, 0, len(rules))
	for i, rc := range rules {
		key := fmt.Sprintf("rules[%d]", i)
		bad := func(field, format string, args ...any) {
			errs = append(errs, fmt.Errorf("%s%s%s: %s", prefix, key, field, fmt.Sprintf(format, args...)))
		}
		r := rule{name: rc.Name}
		if r.name == "" {
			r.name = key
		}
		if len(r.name) > 100 {
			bad(".name", "is longer than 100 characters")
		}
		switch rc.Action {
		case "allow", "deny":
			r.allow = rc.Action == "allow"
		default:
			bad(".action", "%q must be allow or deny", rc.Action)
		}
		if len(rc.UserHashes) > 0 {
			r.users = map[string]bool{}
			for _, u := range rc.UserHashes {
				r.users[string(u)] = true
			}
		}
		for _, d := range rc.DeviceIDs {
			if !mailpush.ValidDeviceID(mailpush.NormalizeDeviceID(d)) {
				bad(".deviceIds", "%q is not 1 to %d ASCII letters and digits", d, mailpush.MaxDeviceIDLen)
			}
		}
		r.deviceIDs = set(rc.DeviceIDs, mailpush.NormalizeDeviceID)
		for _, d := range rc.DeviceTypes {
			if d == "" || len(d) > 64 || !printable(d) {
				bad(".deviceTypes", "%q is not 1 to 64 printable characters", d)
			}
		}
		r.deviceTypes = set(rc.DeviceTypes, strings.ToLower)
		if rc.UserAgent != "" {
			re, err := regexp.Compile(rc.UserAgent)
			if err != nil || len(rc.UserAgent) > 512 {
				bad(".userAgent", "%q is not a regular expression of up to 512 characters: %v", rc.UserAgent, err)
			}
			r.userAgent = re
		}
		for _, c := range rc.Commands {
			if CanonicalCommand(c) == "" {
				bad(".commands", "%q is not an ActiveSync command", c)
			}
		}
		r.commands = set(rc.Commands, CanonicalCommand)
		for _, n := range rc.Networks {
			pfx, err := netip.ParsePrefix(n)
			if err != nil {
				bad(".networks", "%q is not a CIDR network such as 10.0.0.0/8", n)
				continue
			}
			r.networks = append(r.networks, pfx.Masked())
		}
		if r.users == nil && r.deviceIDs == nil && r.deviceTypes == nil && r.userAgent == nil && r.commands == nil && r.networks == nil {
			bad("", "matches every request: give users, deviceIds, deviceTypes, userAgent, commands or networks (use defaultAction for a catch-all)")
		}
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

// CheckRules validates rules as WithRules does, with an EInvalid error
// naming each bad rule and field ("rules[2].networks: …").
func CheckRules(rules []mailpush.GateRule) error {
	_, err := compileRules(rules, "")
	if err != nil {
		return mailpush.Errorf(mailpush.EInvalid, "%s", err.Error())
	}
	return nil
}

// WithRules returns a copy of p that applies rules instead of its own;
// errors are CheckRules's.
func (p *Policy) WithRules(rules []mailpush.GateRule) (*Policy, error) {
	compiled, err := compileRules(rules, "")
	if err != nil {
		return nil, mailpush.Errorf(mailpush.EInvalid, "%s", err.Error())
	}
	cp := *p
	cp.rules = compiled
	return &cp, nil
}

func set(list []string, norm func(string) string) map[string]bool {
	if len(list) == 0 {
		return nil
	}
	m := make(map[string]bool, len(list))
	for _, v := range list {
		m[norm(v)] = true
	}
	return m
}

// Input is everything a decision may depend on.
type Input struct {
	// Malformed, when set, is why the request could not be read: it is denied.
	Malformed error
	Query     Query
	UserAgent string
	IP        netip.Addr // zero when unknown
	// UserHash is the keyed hash of the authenticated user (canonical
	// form); nil when the request names none.
	UserHash []byte
	// Creds is what the request's credentials are, when UserHash is nil.
	Creds Creds
	// ProtocolVersion is the request's MS-ASProtocolVersion ("16.1"), or "".
	ProtocolVersion string
	// Options is set for the OPTIONS method, which asks which protocol
	// versions the server speaks and so has none yet.
	Options bool
	// Device is the registry's entry; nil when the device is not registered.
	Device *mailpush.GateDevice
	// StoreErr is set when the registry could not answer.
	StoreErr error
}

// Creds classifies a request without a readable user.
type Creds int

const (
	// CredsNone: no credentials at all. On a connection that NTLM or
	// Kerberos authenticated earlier such a request is served as that
	// connection's user, whom the gate cannot know.
	CredsNone Creds = iota
	// CredsChallenge: credentials that authenticate nobody yet (an empty
	// Bearer, NTLM's NEGOTIATE): Exchange answers them with 401.
	CredsChallenge
	// CredsOpaque: credentials whose user the gate cannot read (Kerberos,
	// a token without a user claim).
	CredsOpaque
)

// Decision is the gate's answer.
type Decision struct {
	Allow  bool
	Reason string // a short sentence for X-Mailpush-Reason and the audit log
	Rule   string // the rule that decided, if one did
}

// Decide applies, in order: malformed input is denied; a blocked or wiped
// device is denied (the MDM's word beats any rule); a device used by another
// user than its registered one is denied (UserMustMatch); the first matching
// rule decides; a registry failure decides by FailMode; then the mode:
//
//	state          compliantOnly   allButBlocked
//	compliant      allow           allow
//	non-compliant  deny            allow
//	unknown / none defaultAction   defaultAction
func (p *Policy) Decide(in Input) Decision {
	if in.Malformed != nil {
		return Decision{Reason: "malformed request: " + mailpush.ErrorMessage(in.Malformed)}
	}
	if in.Query.DeviceID == "" {
		return Decision{Reason: "malformed request: no DeviceId"}
	}
	if p.minVersion > 0 && !in.Options {
		v, ok := protocolVersion(in.ProtocolVersion)
		switch {
		case in.ProtocolVersion == "":
			return Decision{Reason: "no MS-ASProtocolVersion: the gate requires " + versionString(p.minVersion) + " or later"}
		case !ok:
			return Decision{Reason: "malformed request: MS-ASProtocolVersion is not a protocol version"}
		case v < p.minVersion:
			return Decision{Reason: "protocol version " + versionString(v) + " is below the gate's minimum " + versionString(p.minVersion)}
		}
	}
	d := in.Device
	if d != nil {
		switch {
		case d.State == mailpush.DeviceBlocked:
			return Decision{Reason: "device is blocked"}
		case d.State == mailpush.DeviceWiped:
			return Decision{Reason: "device is wiped"}
		case p.userMustMatch && d.UserHash != nil && in.UserHash != nil && !bytes.Equal(d.UserHash, in.UserHash):
			return Decision{Reason: "device is registered to another user"}
		case p.userMustMatch && d.UserHash != nil && in.UserHash == nil && in.Creds == CredsNone:
			return Decision{Reason: "the request carries no credentials to match the device's registered user"}
		case p.userMustMatch && d.UserHash != nil && in.UserHash == nil && in.Creds == CredsOpaque:
			return Decision{Reason: "the request's credentials name no user the gate can read (Kerberos, or a token without a user claim): set gate.identity.header"}
		}
	}
	for i := range p.rules {
		if r := &p.rules[i]; r.matches(&in) {
			verb := "denied"
			if r.allow {
				verb = "allowed"
			}
			return Decision{Allow: r.allow, Rule: r.name, Reason: verb + " by rule " + r.name}
		}
	}
	if in.StoreErr != nil {
		if p.failOpen {
			return Decision{Allow: true, Reason: "device registry unavailable: fail-open"}
		}
		return Decision{Reason: "device registry unavailable: fail-closed"}
	}
	state := mailpush.DeviceUnknown
	if d != nil {
		state = d.State
	}
	switch {
	case state == mailpush.DeviceCompliant:
		return Decision{Allow: true, Reason: "device is compliant"}
	case state == mailpush.DeviceNonCompliant && p.compliantOnly:
		return Decision{Reason: "device is not compliant"}
	case state == mailpush.DeviceNonCompliant:
		return Decision{Allow: true, Reason: "device is not blocked (allButBlocked mode)"}
	case d == nil && p.defaultAllow:
		return Decision{Allow: true, Reason: "device is not registered: default allow"}
	case d == nil:
		return Decision{Reason: "device is not registered: default deny"}
	case p.defaultAllow:
		return Decision{Allow: true, Reason: "device state is unknown: default allow"}
	}
	return Decision{Reason: "device state is unknown: default deny"}
}

// protocolVersion reads "major.minor" (16.1) as major*10+minor.
func protocolVersion(s string) (int, bool) {
	maj, min, ok := strings.Cut(s, ".")
	if !ok || len(maj) < 1 || len(maj) > 2 || len(min) != 1 {
		return 0, false
	}
	v := 0
	for _, c := range []byte(maj + min) {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	return v, v > 0
}

func versionString(v int) string { return fmt.Sprintf("%d.%d", v/10, v%10) }

func (r *rule) matches(in *Input) bool {
	if r.users != nil && (in.UserHash == nil || !r.users[string(in.UserHash)]) {
		return false
	}
	if r.deviceIDs != nil && !r.deviceIDs[in.Query.DeviceID] {
		return false
	}
	if r.deviceTypes != nil && !r.deviceTypes[strings.ToLower(in.Query.DeviceType)] {
		return false
	}
	if r.userAgent != nil && !r.userAgent.MatchString(in.UserAgent) {
		return false
	}
	if r.commands != nil && !r.commands[in.Query.Cmd] {
		return false
	}
	if r.networks != nil {
		if !in.IP.IsValid() {
			return false
		}
		ok := false
		for _, n := range r.networks {
			if n.Contains(in.IP.Unmap()) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
