package ewsfake

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math/bits"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf16"
)

// NTLM, as IIS does it for on-premises Exchange (MS-NLMP, NTLMv2 only): the
// client sends a NEGOTIATE message, the server answers 401 with a CHALLENGE
// (a random 8-byte server challenge and the target info), the client answers
// with an AUTHENTICATE message whose NTProofStr the server checks with the
// user's password. Authentication belongs to the TCP connection: later
// requests on it are that user's without an Authorization header, which is
// why a client must never share an NTLM connection between users.

type connKey struct{}

// connState is the NTLM state of one TCP connection.
type connState struct {
	mu        sync.Mutex
	challenge []byte   // the last CHALLENGE's server challenge
	user      *mailbox // authenticated user, once AUTHENTICATE checked out
}

func connContext(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, &connState{})
}

const (
	flagUnicode        = 1 << 0
	flagRequestTarget  = 1 << 2
	flagNTLM           = 1 << 9
	flagAlwaysSign     = 1 << 15
	flagTargetDomain   = 1 << 16
	flagExtendedSecure = 1 << 19
	flagTargetInfo     = 1 << 23
	flag128            = 1 << 29
	flag56             = 1 << 31
)

var ntlmSignature = []byte("NTLMSSP\x00")

// ntlmAuth handles an NTLM or Negotiate Authorization header. It returns the
// authenticated user, or writes the next 401 itself and returns nil.
func (s *Server) ntlmAuth(w http.ResponseWriter, r *http.Request, st *connState, scheme, token string) *mailbox {
	msg, err := base64.StdEncoding.DecodeString(token)
	if err != nil || len(msg) < 12 || string(msg[:8]) != string(ntlmSignature) {
		s.unauthorized(w, "malformed NTLM message")
		return nil
	}
	switch binary.LittleEndian.Uint32(msg[8:12]) {
	case 1: // NEGOTIATE
		challenge := make([]byte, 8)
		rand.Read(challenge)
		st.mu.Lock()
		st.challenge, st.user = challenge, nil
		st.mu.Unlock()
		w.Header().Set("WWW-Authenticate", scheme+" "+base64.StdEncoding.EncodeToString(challengeMessage(challenge)))
		http.Error(w, "401 - Unauthorized", http.StatusUnauthorized)
		return nil
	case 3: // AUTHENTICATE
		st.mu.Lock()
		challenge := st.challenge
		st.challenge = nil
		st.mu.Unlock()
		if challenge == nil {
			s.unauthorized(w, "AUTHENTICATE without a CHALLENGE on this connection")
			return nil
		}
		mb := s.checkAuthenticate(msg, challenge)
		if mb == nil {
			s.unauthorized(w, "NTLM authentication failed")
			return nil
		}
		st.mu.Lock()
		st.user = mb
		st.mu.Unlock()
		return mb
	}
	s.unauthorized(w, "unexpected NTLM message")
	return nil
}

// challengeMessage builds a CHALLENGE (type 2) message.
func challengeMessage(serverChallenge []byte) []byte {
	domain := utf16le("EXAMPLE")
	var info []byte
	av := func(id uint16, v []byte) {
		info = binary.LittleEndian.AppendUint16(info, id)
		info = binary.LittleEndian.AppendUint16(info, uint16(len(v)))
		info = append(info, v...)
	}
	av(2, domain)                 // MsvAvNbDomainName
	av(1, utf16le("EWSFAKE"))     // MsvAvNbComputerName
	av(4, utf16le("example.com")) // MsvAvDnsDomainName
	ts := make([]byte, 8)
	binary.LittleEndian.PutUint64(ts, uint64(time.Now().UnixNano()/100)+116444736000000000)
	av(7, ts) // MsvAvTimestamp
	av(0, nil)

	const header = 48
	m := make([]byte, header, header+len(domain)+len(info))
	copy(m, ntlmSignature)
	binary.LittleEndian.PutUint32(m[8:], 2)
	putField(m[12:], len(domain), header)
	binary.LittleEndian.PutUint32(m[20:], flagUnicode|flagRequestTarget|flagNTLM|flagAlwaysSign|flagTargetDomain|flagExtendedSecure|flagTargetInfo|flag128|flag56)
	copy(m[24:32], serverChallenge)
	putField(m[40:], len(info), header+len(domain))
	m = append(m, domain...)
	return append(m, info...)
}

func putField(b []byte, n, offset int) {
	binary.LittleEndian.PutUint16(b, uint16(n))
	binary.LittleEndian.PutUint16(b[2:], uint16(n))
	binary.LittleEndian.PutUint32(b[4:], uint32(offset))
}

// field returns the payload of the security buffer at b[at:at+8] in msg.
func field(msg []byte, at int) ([]byte, error) {
	if len(msg) < at+8 {
		return nil, errors.New("short message")
	}
	n := int(binary.LittleEndian.Uint16(msg[at:]))
	off := int(binary.LittleEndian.Uint32(msg[at+4:]))
	if off < 0 || off+n > len(msg) {
		return nil, errors.New("field out of range")
	}
	return msg[off : off+n], nil
}

// checkAuthenticate verifies an AUTHENTICATE (type 3) message against the
// server challenge: NTProofStr = HMAC-MD5(NTOWFv2, serverChallenge || blob)
// with NTOWFv2 = HMAC-MD5(MD4(UTF-16LE(password)), UTF-16LE(UPPER(user) || domain)).
func (s *Server) checkAuthenticate(msg, serverChallenge []byte) *mailbox {
	nt, err1 := field(msg, 20)
	dom, err2 := field(msg, 28)
	usr, err3 := field(msg, 36)
	if err := errors.Join(err1, err2, err3); err != nil || len(nt) < 16+28 {
		return nil
	}
	user, domain := fromUTF16LE(usr), fromUTF16LE(dom)
	login := user
	if domain != "" {
		login = domain + `\` + user
	}
	s.mu.Lock()
	mb := s.logins[lower(login)]
	var password string
	if mb != nil {
		password = mb.password
	}
	s.mu.Unlock()
	if mb == nil {
		return nil
	}
	ntowf := hmacMD5(md4(utf16le(password)), utf16le(strings.ToUpper(user)+domain))
	proof := hmacMD5(ntowf, serverChallenge, nt[16:])
	if !hmac.Equal(proof, nt[:16]) {
		return nil
	}
	return mb
}

func hmacMD5(key []byte, data ...[]byte) []byte {
	h := hmac.New(md5.New, key)
	for _, d := range data {
		h.Write(d)
	}
	return h.Sum(nil)
}

func utf16le(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return b
}

func fromUTF16LE(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

// md4 is RFC 1320's MD4, which NTLM's NT hash needs (the standard library
// has none, and golang.org/x/crypto/md4 is deprecated).
func md4(msg []byte) []byte {
	n := len(msg)
	msg = append(append([]byte{}, msg...), 0x80)
	for len(msg)%64 != 56 {
		msg = append(msg, 0)
	}
	msg = binary.LittleEndian.AppendUint64(msg, uint64(n)*8)
	a, b, c, d := uint32(0x67452301), uint32(0xefcdab89), uint32(0x98badcfe), uint32(0x10325476)
	var x [16]uint32
	for off := 0; off < len(msg); off += 64 {
		for i := range x {
			x[i] = binary.LittleEndian.Uint32(msg[off+4*i:])
		}
		aa, bb, cc, dd := a, b, c, d
		f := func(x, y, z uint32) uint32 { return x&y | ^x&z }
		g := func(x, y, z uint32) uint32 { return x&y | x&z | y&z }
		h := func(x, y, z uint32) uint32 { return x ^ y ^ z }
		for _, i := range [4]int{0, 4, 8, 12} {
			a = bits.RotateLeft32(a+f(b, c, d)+x[i], 3)
			d = bits.RotateLeft32(d+f(a, b, c)+x[i+1], 7)
			c = bits.RotateLeft32(c+f(d, a, b)+x[i+2], 11)
			b = bits.RotateLeft32(b+f(c, d, a)+x[i+3], 19)
		}
		for _, i := range [4]int{0, 1, 2, 3} {
			a = bits.RotateLeft32(a+g(b, c, d)+x[i]+0x5a827999, 3)
			d = bits.RotateLeft32(d+g(a, b, c)+x[i+4]+0x5a827999, 5)
			c = bits.RotateLeft32(c+g(d, a, b)+x[i+8]+0x5a827999, 9)
			b = bits.RotateLeft32(b+g(c, d, a)+x[i+12]+0x5a827999, 13)
		}
		for _, i := range [4]int{0, 2, 1, 3} {
			a = bits.RotateLeft32(a+h(b, c, d)+x[i]+0x6ed9eba1, 3)
			d = bits.RotateLeft32(d+h(a, b, c)+x[i+8]+0x6ed9eba1, 9)
			c = bits.RotateLeft32(c+h(d, a, b)+x[i+4]+0x6ed9eba1, 11)
			b = bits.RotateLeft32(b+h(c, d, a)+x[i+12]+0x6ed9eba1, 15)
		}
		a, b, c, d = a+aa, b+bb, c+cc, d+dd
	}
	out := make([]byte, 16)
	binary.LittleEndian.PutUint32(out, a)
	binary.LittleEndian.PutUint32(out[4:], b)
	binary.LittleEndian.PutUint32(out[8:], c)
	binary.LittleEndian.PutUint32(out[12:], d)
	return out
}
