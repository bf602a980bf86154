package mailpush

import (
	"context"
	"time"
)

// Why a recipient has no usable S/MIME encryption certificate (package
// smime decides; the API reports them as they are).
const (
	SMIMENoCertificate        = "no_certificate"        // the directory has no S/MIME certificate for the address
	SMIMEExpired              = "expired"               // the best candidate's validity has ended
	SMIMENotYetValid          = "not_yet_valid"         // … has not begun
	SMIMERevoked              = "revoked"               // … is on its issuer's CRL
	SMIMEUntrustedChain       = "untrusted_chain"       // … does not chain to the tenant's roots (or its revocation status is unknown)
	SMIMESigningOnly          = "signing_only"          // … may sign but not encrypt (key usage); also a class
	SMIMEWrongEmail           = "wrong_email"           // … is for another address
	SMIMEDirectoryUnavailable = "directory_unavailable" // the directory did not answer in time
	SMIMEVerdictEncryptAll    = "encrypt_all"           // every recipient has a usable certificate
	SMIMEVerdictCannotEncrypt = "cannot_encrypt"        // at least one has none: send nothing encrypted
)

// S/MIME certificate classes, by what the certificate may do for mail
// (RFC 8550 key usage and extended key usage); SMIMESigningOnly is one.
const (
	SMIMEClassEncryptionOnly = "encryption_only"
	SMIMEClassBoth           = "both"
	SMIMEClassNeither        = "neither" // e.g. an extended key usage without emailProtection
	SMIMEClassCA             = "ca"      // a CA certificate, not a user's
)

// SMIMECertificate is a usable encryption certificate of a recipient.
type SMIMECertificate struct {
	DER       []byte
	SHA256    string // hex of the SHA-256 of DER
	Subject   string
	NotBefore time.Time
	NotAfter  time.Time
}

// SMIMERecipient is the answer for one recipient: its usable certificates,
// the one to encrypt to first (newest valid wins), or the reason there is
// none with a sentence for people.
type SMIMERecipient struct {
	Address      string
	Certificates []SMIMECertificate
	Reason       string // "" when Certificates is not empty
	Detail       string
}

// SMIMELookup is the answer for one message: encryption is all or none, so
// one verdict, and the recipients that block it.
type SMIMELookup struct {
	Verdict    string
	Blocking   []string
	Recipients []SMIMERecipient
}

// SMIMEClassified describes one certificate of a classified file.
type SMIMEClassified struct {
	Subject       string
	SHA256        string
	Class         string // signing_only, encryption_only, both, neither, ca
	KeyAlgorithm  string // RSA, ECDSA, Ed25519, …
	KeyUsage      []string
	ExtKeyUsage   []string
	Emails        []string
	NotBefore     time.Time
	NotAfter      time.Time
	HasPrivateKey bool // a PKCS#12 held this certificate's private key
}

// SMIME serves the S/MIME endpoints (package smime implements it).
type SMIME interface {
	// LookupCertificates finds each recipient's usable encryption
	// certificates in the tenant's directory. Errors are for the request
	// as a whole (EInvalid for a malformed list, EUnsupported for a tenant
	// without S/MIME); a directory that is down is a per-recipient reason.
	LookupCertificates(ctx context.Context, t *Tenant, recipients []string) (SMIMELookup, error)
	// Classify says what each certificate of a PEM, DER or PKCS#12 file
	// may do; password opens a PKCS#12.
	Classify(ctx context.Context, file []byte, password string) ([]SMIMEClassified, error)
}
