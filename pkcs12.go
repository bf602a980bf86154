package mailpush

import "encoding/asn1"

// MaxPKCS12Iterations caps the key-derivation iterations of a PKCS#12 that
// mailpush opens (an S/MIME file to classify, a client identity to sign in
// with): the count is chosen by whoever made the file, and go-pkcs12 would
// run any count (2^31 iterations is hours of CPU per request).
//
// The files an MDM pushes are made with far fewer: OpenSSL 1.1 and 3 use
// 2,048, Windows (certutil, Export-PfxCertificate, and so Intune's PKCS
// connector) 2,000, Java's keytool 10,000, go-pkcs12 2,048. 100,000 leaves
// ten times the highest of these for an admin who raised it, and bounds one
// derivation of the slowest kind (the legacy PKCS#12 KDF, SHA-1) to about a
// sixth of what the former cap, 600,000 (.NET's import limit, OWASP's
// figure for password hashes, not for files), cost: 5.5 s at load 24
// (docs/PERFORMANCE.md).
const MaxPKCS12Iterations = 100_000

// PKCS12Iterations returns the largest key-derivation iteration count
// visible in a PKCS#12 file without opening it, so that a file asking for
// too many is refused before any work (see maxIterations).
func PKCS12Iterations(der []byte) int { return maxIterations(der, 0) }

// maxIterations returns the largest iteration count visible in der: every
// SEQUENCE whose first element is an OCTET STRING (a salt) and whose next
// INTEGER is small enough to be a count — the shape of PKCS#12 MacData,
// PBE parameters and PBKDF2 parameters — searched recursively, including
// inside OCTET STRINGs that hold DER (unencrypted PKCS#12 contents).
// Parameters inside encrypted contents are visible only after decryption;
// the cap on concurrent PKCS#12 work bounds what those can cost.
func maxIterations(der []byte, depth int) int {
	if depth > 16 {
		return 0
	}
	max := 0
	for len(der) > 0 {
		var v asn1.RawValue
		rest, err := asn1.Unmarshal(der, &v)
		if err != nil {
			return max
		}
		der = rest
		switch {
		case v.Class == asn1.ClassUniversal && v.Tag == asn1.TagSequence:
			if n := saltCount(v.Bytes); n > max {
				max = n
			}
			if n := maxIterations(v.Bytes, depth+1); n > max {
				max = n
			}
		case v.IsCompound || (v.Class == asn1.ClassUniversal && v.Tag == asn1.TagOctetString):
			if n := maxIterations(v.Bytes, depth+1); n > max {
				max = n
			}
		}
	}
	return max
}

// saltCount returns the iteration count of a SEQUENCE body shaped
// { OCTET STRING salt, INTEGER iterations, … } or MacData's
// { DigestInfo, OCTET STRING salt, INTEGER iterations }, else 0.
func saltCount(body []byte) int {
	var first, second asn1.RawValue
	rest, err := asn1.Unmarshal(body, &first)
	if err != nil {
		return 0
	}
	if first.Tag == asn1.TagSequence { // MacData: skip the DigestInfo
		if rest, err = asn1.Unmarshal(rest, &first); err != nil {
			return 0
		}
	}
	if first.Class != asn1.ClassUniversal || first.Tag != asn1.TagOctetString {
		return 0
	}
	if _, err := asn1.Unmarshal(rest, &second); err != nil || second.Tag != asn1.TagInteger || second.Class != asn1.ClassUniversal {
		return 0
	}
	var n int64
	if _, err := asn1.Unmarshal(second.FullBytes, &n); err != nil {
		return 1 << 31 // larger than any int64: certainly too many
	}
	if n > 1<<31 || n < 0 {
		return 1 << 31
	}
	return int(n)
}
