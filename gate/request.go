package gate

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/mailpush/mailpush"
)

// Size caps for what a reverse proxy forwards. Real ActiveSync requests stay
// far below them; anything longer is refused, not truncated.
const (
	MaxQueryLen     = 4096 // the ActiveSync query string
	MaxURILen       = 8192 // X-Original-URI / X-Forwarded-Uri / the url parameter
	MaxHeaderLen    = 4096 // Authorization, X-Forwarded-For
	MaxUserAgentLen = 512
	MaxUserLen      = 256
	MaxDeviceType   = 64
	maxBinaryQuery  = 2048 // decoded base64 query
)

// Query is what an ActiveSync request's query says about itself.
type Query struct {
	Cmd             string // e.g. Sync, Ping, FolderSync
	User            string // as the client wrote it (may be empty)
	DeviceID        string // normalised (mailpush.NormalizeDeviceID)
	DeviceType      string
	ProtocolVersion string // base64 form only ("14.1"); plain form sends MS-ASProtocolVersion instead
	Encoded         bool   // the query was the base64 form
}

// commandCodes are MS-ASHTTP's command codes of the base64 query.
var commandCodes = [...]string{
	0: "Sync", 1: "SendMail", 2: "SmartForward", 3: "SmartReply", 4: "GetAttachment",
	9: "FolderSync", 10: "FolderCreate", 11: "FolderDelete", 12: "FolderUpdate", 13: "MoveItems",
	14: "GetItemEstimate", 15: "MeetingResponse", 16: "Search", 17: "Settings", 18: "Ping",
	19: "ItemOperations", 20: "Provision", 21: "ResolveRecipients", 22: "ValidateCert", 23: "Find",
}

// commandNames maps the plain form's Cmd values, without case, to the
// canonical name; an unknown command is refused.
var commandNames = func() map[string]string {
	m := map[string]string{}
	for _, c := range commandCodes {
		if c != "" {
			m[strings.ToLower(c)] = c
		}
	}
	// Commands of the plain form only (no code in the base64 form).
	for _, c := range []string{"GetHierarchy", "CreateCollection", "DeleteCollection", "MoveCollection", "Options"} {
		m[strings.ToLower(c)] = c
	}
	return m
}()

// CanonicalCommand returns the canonical spelling of an ActiveSync command,
// or "" when it is not one.
func CanonicalCommand(c string) string {
	if canonicalCommands[c] { // as clients spell it: no lower-case copy
		return c
	}
	return commandNames[strings.ToLower(c)]
}

// canonicalCommands are the values of commandNames.
var canonicalCommands = func() map[string]bool {
	m := map[string]bool{}
	for _, c := range commandNames {
		m[c] = true
	}
	return m
}()

const userTag = 8 // MS-ASHTTP command parameter tag of User

func invalid(format string, args ...any) error {
	return mailpush.Errorf(mailpush.EInvalid, format, args...)
}

// ParseQuery parses the raw (still escaped) query of an ActiveSync request
// in either form: plain (Cmd=…&User=…&DeviceId=…&DeviceType=…) or one base64
// value (MS-ASHTTP 2.2.1.1.1.1). The DeviceId is required; a malformed query
// gives an EInvalid error whose message says what is wrong.
func ParseQuery(raw string) (Query, error) {
	if raw == "" {
		return Query{}, invalid("the ActiveSync query is empty: no DeviceId")
	}
	if len(raw) > MaxQueryLen {
		return Query{}, invalid("the ActiveSync query is longer than %d bytes", MaxQueryLen)
	}
	if isPlain(raw) {
		return parsePlain(raw)
	}
	return parseEncoded(raw)
}

// isPlain tells the plain form (key=value pairs with a Cmd or DeviceId key)
// from the base64 form, whose only '=' are trailing padding.
func isPlain(raw string) bool {
	if strings.Contains(raw, "&") {
		return true
	}
	k, _, ok := strings.Cut(raw, "=")
	return ok && strings.TrimRight(raw, "=") != k
}

// plainParams are the parameter names of the plain query form (MS-ASHTTP
// 2.2.1.1.1.2), without case. Any other name is refused: Exchange might read
// a stray name (a base64 query smuggled in as a bare key, a look-alike)
// differently from the gate, and a gate must not judge a request it reads
// differently from the server behind it.
var plainParams = func() map[string]int {
	m := map[string]int{}
	for i, k := range plainParamNames {
		m[strings.ToLower(k)] = i
	}
	return m
}()

// plainParamNames are MS-ASHTTP's spellings; a parameter's index is its bit
// in parsePlain's record of the parameters seen.
var plainParamNames = [...]string{"Cmd", "User", "DeviceId", "DeviceType", "AttachmentName", "CollectionId", "CollectionName",
	"ItemId", "LongId", "ParentId", "Occurrence", "Options", "RoundTripId", "SaveInSent"}

// plainParamsAsSpelled finds a parameter spelled as MS-ASHTTP spells it
// without making a lower-case copy.
var plainParamsAsSpelled = func() map[string]int {
	m := map[string]int{}
	for i, k := range plainParamNames {
		m[k] = i
	}
	return m
}()

func parsePlain(raw string) (Query, error) {
	var q Query
	var seen uint32 // bit i: plainParamNames[i]
	for pair := range strings.SplitSeq(raw, "&") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			return Query{}, invalid("the ActiveSync query has a parameter without '=' (a base64 query mixed with key=value pairs?)")
		}
		key, err := url.QueryUnescape(k)
		if err != nil {
			return Query{}, invalid("the ActiveSync query has a bad %%-escape")
		}
		val, err := url.QueryUnescape(v)
		if err != nil {
			return Query{}, invalid("the ActiveSync query has a bad %%-escape")
		}
		i, ok := plainParamsAsSpelled[key]
		if !ok {
			i, ok = plainParams[strings.ToLower(key)]
		}
		if !ok {
			return Query{}, invalid("the ActiveSync query has a parameter MS-ASHTTP does not define")
		}
		if seen&(1<<i) != 0 {
			return Query{}, invalid("the ActiveSync query repeats a parameter")
		}
		seen |= 1 << i
		switch plainParamNames[i] {
		case "Cmd":
			q.Cmd = val
		case "User":
			q.User = val
		case "DeviceId":
			q.DeviceID = val
		case "DeviceType":
			q.DeviceType = val
		}
	}
	return q.check()
}

func parseEncoded(raw string) (Query, error) {
	s, err := url.PathUnescape(raw) // keeps '+', which is base64
	if err != nil {
		return Query{}, invalid("the base64 ActiveSync query has a bad %%-escape")
	}
	enc := base64.StdEncoding
	if !strings.HasSuffix(s, "=") && len(s)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	b, err := enc.DecodeString(s)
	if err != nil {
		return Query{}, invalid("the ActiveSync query is neither key=value pairs nor valid base64")
	}
	if len(b) > maxBinaryQuery {
		return Query{}, invalid("the base64 ActiveSync query decodes to more than %d bytes", maxBinaryQuery)
	}
	return decodeBinary(b)
}

// decodeBinary reads MS-ASHTTP's binary query: protocol version, command
// code, locale (2 bytes LE), length-prefixed DeviceId, length-prefixed
// PolicyKey (0 or 4 bytes), length-prefixed DeviceType, then tag/length/value
// command parameters (tag 8 = User).
func decodeBinary(b []byte) (Query, error) {
	q := Query{Encoded: true}
	if len(b) < 5 {
		return Query{}, invalid("the base64 ActiveSync query is truncated (%d bytes)", len(b))
	}
	ver, cmd := b[0], int(b[1])
	if ver < 10 || ver > 250 {
		return Query{}, invalid("the base64 ActiveSync query has an impossible protocol version %d", ver)
	}
	q.ProtocolVersion = strconv.Itoa(int(ver)/10) + "." + strconv.Itoa(int(ver)%10)
	if cmd >= len(commandCodes) || commandCodes[cmd] == "" {
		return Query{}, invalid("the base64 ActiveSync query has an unknown command code %d", cmd)
	}
	q.Cmd = commandCodes[cmd]
	_ = binary.LittleEndian.Uint16(b[2:4]) // locale: not a decision input
	rest := b[4:]
	field := func(name string, max int) ([]byte, error) {
		if len(rest) < 1 {
			return nil, invalid("the base64 ActiveSync query ends before its %s length", name)
		}
		n := int(rest[0])
		if n > max {
			return nil, invalid("the base64 ActiveSync query's %s is %d bytes, more than %d", name, n, max)
		}
		if len(rest) < 1+n {
			return nil, invalid("the base64 ActiveSync query is truncated inside its %s", name)
		}
		v := rest[1 : 1+n]
		rest = rest[1+n:]
		return v, nil
	}
	dev, err := field("DeviceId", 32)
	if err != nil {
		return Query{}, err
	}
	// Exchange shows binary DeviceIds as upper-case hexadecimal; so do MDMs.
	q.DeviceID = strings.ToUpper(hex.EncodeToString(dev))
	pk, err := field("PolicyKey", 4)
	if err != nil {
		return Query{}, err
	}
	if len(pk) != 0 && len(pk) != 4 {
		return Query{}, invalid("the base64 ActiveSync query's PolicyKey is %d bytes, not 0 or 4", len(pk))
	}
	dt, err := field("DeviceType", MaxDeviceType)
	if err != nil {
		return Query{}, err
	}
	q.DeviceType = string(dt)
	userSeen := false
	for len(rest) > 0 {
		tag := rest[0]
		rest = rest[1:]
		v, err := field(fmt.Sprintf("parameter %d", tag), 255)
		if err != nil {
			return Query{}, err
		}
		if tag == userTag {
			if userSeen {
				return Query{}, invalid("the base64 ActiveSync query repeats User")
			}
			userSeen = true
			q.User = string(v)
		}
	}
	return q.check()
}

// check validates and normalises the decision inputs common to both forms.
// The DeviceId is taken as sent: ASCII letters and digits only, nothing
// trimmed, upper-cased in ASCII for comparison.
func (q Query) check() (Query, error) {
	if q.DeviceID == "" {
		return Query{}, invalid("the ActiveSync query has no DeviceId")
	}
	if !mailpush.ValidDeviceID(q.DeviceID) {
		return Query{}, invalid("the ActiveSync DeviceId is not 1 to %d ASCII letters and digits", mailpush.MaxDeviceIDLen)
	}
	q.DeviceID = mailpush.NormalizeDeviceID(q.DeviceID)
	if q.Cmd != "" {
		c := CanonicalCommand(q.Cmd)
		if c == "" {
			return Query{}, invalid("the ActiveSync command is not one MS-ASCMD defines")
		}
		q.Cmd = c
	}
	if len(q.DeviceType) > MaxDeviceType || !printable(q.DeviceType) {
		return Query{}, invalid("the ActiveSync DeviceType is not up to %d printable characters", MaxDeviceType)
	}
	if len(q.User) > MaxUserLen || !printable(q.User) {
		return Query{}, invalid("the ActiveSync User is not up to %d printable characters", MaxUserLen)
	}
	return q, nil
}

// printable reports whether s is valid UTF-8 without control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// BasicUser returns the user name of an HTTP Basic Authorization header
// value, or "" when there is none. The password is never returned or kept:
// only the part before the first ':' is copied out.
func BasicUser(auth string) (string, error) {
	if auth == "" {
		return "", nil
	}
	if len(auth) > MaxHeaderLen {
		return "", invalid("the Authorization header is longer than %d bytes", MaxHeaderLen)
	}
	scheme, cred, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return "", nil // Bearer (modern auth) and others carry no user name here
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return "", invalid("the Basic Authorization header is not valid base64")
	}
	i := bytes.IndexByte(raw, ':')
	if i < 0 {
		clear(raw)
		return "", invalid("the Basic Authorization header has no user:password pair")
	}
	user := string(raw[:i])
	clear(raw) // the password does not outlive this call in our buffer
	if len(user) > MaxUserLen || !printable(user) {
		return "", invalid("the Basic Authorization user is not up to %d printable characters", MaxUserLen)
	}
	return user, nil
}
