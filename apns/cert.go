package apns

import (
	"crypto/tls"
	"errors"
	"fmt"

	"software.sslmate.com/src/go-pkcs12"
)

// LoadP12 reads an APNs client certificate exported from the Keychain as a
// .p12 (PKCS #12) file with its password: the certificate, its private key
// and any intermediates, ready for Config.Certificate.
func LoadP12(data []byte, password string) (*tls.Certificate, error) {
	key, leaf, chain, err := pkcs12.DecodeChain(data, password)
	if err != nil {
		if errors.Is(err, pkcs12.ErrIncorrectPassword) {
			return nil, errors.New("apns: .p12 file: wrong password")
		}
		return nil, fmt.Errorf("apns: .p12 file: %w", err)
	}
	cert := &tls.Certificate{PrivateKey: key, Leaf: leaf, Certificate: [][]byte{leaf.Raw}}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert, nil
}
