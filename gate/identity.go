package gate

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf16"
)

// IdentityConfig says where the gate finds the authenticated user and how
// the user name forms are compared (the gate.identity key).
type IdentityConfig struct {
	// Header, when set, is the request header in which the proxy forwards
	// the user it authenticated itself (e.g. X-Remote-User). It is then the
	// only source of the user; the proxy's template must overwrite it.
	Header string `yaml:"header"`
	// Domains maps NetBIOS domain names to the DNS domains of user
	// principal names: with {CORP: example.com}, CORP\alice and
	// alice@example.com are one user.
	Domains map[string]string `yaml:"domains"`
	// DefaultDomain is the DNS domain of a bare user name (alice).
	DefaultDomain string `yaml:"defaultDomain"`
}

// Identity is a compiled IdentityConfig: how user names are put in the one
// form that is hashed and compared. The zero configuration is valid.
type Identity struct {
	header        string
	domains       map[string]string // upper-case NetBIOS name → lower-case DNS domain
	defaultDomain string
}

// CompileIdentity validates c; errors name the configuration key.
func CompileIdentity(c IdentityConfig) (*Identity, []error) {
	var errs []error
	id := &Identity{domains: map[string]string{}, defaultDomain: asciiLower(strings.TrimSpace(c.DefaultDomain))}
	if c.Header != "" {
		if !headerName(c.Header) {
			errs = append(errs, fmt.Errorf("config key gate.identity.header: %q is not an HTTP header name", c.Header))
		}
		id.header = c.Header
	}
	for k, v := range c.Domains {
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if k == "" || strings.ContainsAny(k, `\@ `) || v == "" || strings.ContainsAny(v, `\@ `) || !isASCII(k) || !isASCII(v) {
			errs = append(errs, fmt.Errorf("config key gate.identity.domains: %q: %q must map a NetBIOS domain (CORP) to a DNS domain (example.com)", k, v))
			continue
		}
		id.domains[strings.ToUpper(k)] = asciiLower(v)
	}
	if strings.ContainsAny(id.defaultDomain, `\@ `) {
		errs = append(errs, fmt.Errorf("config key gate.identity.defaultDomain: %q is not a DNS domain", c.DefaultDomain))
	}
	return id, errs
}

// Canonical is the one form of a user name that the gate hashes and
// compares: user@dnsdomain in ASCII lower case. DOMAIN\user becomes
// user@domain through the domain map (an unmapped domain keeps the form
// domain\user, which then equals only itself), a bare name takes the default
// domain. Names with non-ASCII capital letters are refused: their case
// folding is ambiguous (the Kelvin sign folds to k), and a look-alike must
// not become someone else.
func (id *Identity) Canonical(user string) (string, error) {
	u := strings.TrimSpace(user)
	if u == "" {
		return "", nil
	}
	if len(u) > MaxUserLen || !printable(u) {
		return "", invalid("the user name is not up to %d printable characters", MaxUserLen)
	}
	u = asciiLower(u)
	if strings.ToLower(u) != u {
		return "", invalid("the user name has non-ASCII capital letters, whose case is ambiguous")
	}
	if dom, name, ok := strings.Cut(u, `\`); ok {
		if name == "" || dom == "" || strings.ContainsAny(name, `\@`) {
			return "", invalid(`the user name is not DOMAIN\user`)
		}
		if d, ok := id.domains[strings.ToUpper(dom)]; ok {
			return name + "@" + d, nil
		}
		return dom + `\` + name, nil
	}
	if local, dom, ok := strings.Cut(u, "@"); ok {
		if local == "" || dom == "" || strings.Contains(dom, "@") {
			return "", invalid("the user name is not user@domain")
		}
		return u, nil
	}
	if id.defaultDomain != "" {
		return u + "@" + id.defaultDomain, nil
	}
	return u, nil
}

// credential is what an Authorization header says about the user.
type credential struct {
	user string
	// challenge: the header starts an authentication and carries no
	// credentials yet (an empty Bearer, NTLM's NEGOTIATE). Exchange answers
	// it with 401 on any connection; it identifies nobody.
	challenge bool
}

// authorizationUser reads the user name from an Authorization header:
// Basic (the part before ':'; the password is never copied out), NTLM's
// AUTHENTICATE message (DOMAIN\user; Exchange verifies it), or a Bearer
// JWT's upn / unique_name / preferred_username claim (not verified here:
// Exchange verifies the token and serves the user it names, so a forged
// claim gets nowhere and a genuine one is the user). Another scheme, or a
// Bearer token without such a claim, gives no user and no challenge: the
// request has credentials the gate cannot attribute.
func authorizationUser(auth string) (credential, error) {
	if auth == "" {
		return credential{}, nil
	}
	if len(auth) > MaxHeaderLen {
		return credential{}, invalid("the Authorization header is longer than %d bytes", MaxHeaderLen)
	}
	scheme, cred, _ := strings.Cut(auth, " ")
	cred = strings.TrimSpace(cred)
	switch {
	case strings.EqualFold(scheme, "Basic"):
		u, err := BasicUser(auth)
		return credential{user: u}, err
	case strings.EqualFold(scheme, "NTLM"), strings.EqualFold(scheme, "Negotiate"):
		raw, err := base64.StdEncoding.DecodeString(cred)
		if err != nil {
			return credential{}, invalid("the %s Authorization header is not valid base64", scheme)
		}
		if !strings.HasPrefix(string(raw), "NTLMSSP\x00") {
			return credential{}, nil // Kerberos: no user name the gate can read
		}
		return ntlmUser(raw)
	case strings.EqualFold(scheme, "Bearer"):
		if cred == "" {
			return credential{challenge: true}, nil
		}
		return credential{user: bearerUser(cred)}, nil
	}
	return credential{}, nil
}

// ntlmUser reads DOMAIN\user from an NTLM AUTHENTICATE message (MS-NLMP
// 2.2.1.3); NEGOTIATE carries no user.
func ntlmUser(b []byte) (credential, error) {
	if len(b) < 12 {
		return credential{}, invalid("the NTLM message is truncated")
	}
	switch binary.LittleEndian.Uint32(b[8:12]) {
	case 1:
		return credential{challenge: true}, nil
	case 3:
	default:
		return credential{}, invalid("the NTLM message is not NEGOTIATE or AUTHENTICATE")
	}
	if len(b) < 64 {
		return credential{}, invalid("the NTLM AUTHENTICATE message is truncated")
	}
	unicode := binary.LittleEndian.Uint32(b[60:64])&1 != 0
	field := func(at int) (string, error) {
		n := int(binary.LittleEndian.Uint16(b[at:]))
		off := int(binary.LittleEndian.Uint32(b[at+4:]))
		if off > len(b) || n > len(b)-off {
			return "", invalid("the NTLM AUTHENTICATE message has a field outside it")
		}
		v := b[off : off+n]
		if !unicode {
			return string(v), nil
		}
		if n%2 != 0 {
			return "", invalid("the NTLM AUTHENTICATE message has an odd-length UTF-16 field")
		}
		u := make([]uint16, n/2)
		for i := range u {
			u[i] = binary.LittleEndian.Uint16(v[2*i:])
		}
		return string(utf16.Decode(u)), nil
	}
	dom, err := field(28)
	if err != nil {
		return credential{}, err
	}
	user, err := field(36)
	if err != nil {
		return credential{}, err
	}
	if user == "" {
		return credential{}, nil // anonymous NTLM: Exchange refuses it
	}
	if dom != "" {
		user = dom + `\` + user
	}
	return credential{user: user}, nil
}

// bearerUser returns the user claim of a JWT, or "".
func bearerUser(tok string) string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return ""
	}
	var claims struct {
		UPN        string `json:"upn"`
		UniqueName string `json:"unique_name"`
		Preferred  string `json:"preferred_username"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return ""
	}
	for _, u := range []string{claims.UPN, claims.UniqueName, claims.Preferred} {
		if u != "" {
			return u
		}
	}
	return ""
}

func asciiLower(s string) string {
	i := 0
	for i < len(s) && !('A' <= s[i] && s[i] <= 'Z') {
		i++
	}
	if i == len(s) {
		return s // nothing to lower: no copy
	}
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// headerName reports whether s is an HTTP header name (an RFC 9110 token).
func headerName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// asciiEqualFold reports whether s and t are equal under ASCII case folding
// only (strings.EqualFold also folds ſ to s and the Kelvin sign to k).
func asciiEqualFold(s, t string) bool {
	if len(s) != len(t) {
		return false
	}
	for i := 0; i < len(s); i++ {
		a, b := s[i], t[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}
