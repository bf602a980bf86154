package graph

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
)

// maxEncryptedData bounds a rich notification's data (Graph's resource
// data for a message with $select=subject,from,isRead is a few KiB).
const maxEncryptedData = 1 << 20

// DecryptContent opens a rich notification's encryptedContent with the
// private key of the certificate it names (encryptionCertificateId), as
// Graph documents it: the data key is RSA-OAEP (SHA-1) encrypted to the
// certificate; the data's HMAC-SHA256 under that key (dataSignature) is
// verified first, and only then is the data decrypted (AES-256-CBC, the IV
// the first 16 bytes of the key, PKCS#7 padding). Any failure is one
// error that says nothing about which step failed to an attacker.
func DecryptContent(ec *EncryptedContent, key *rsa.PrivateKey) ([]byte, error) {
	if ec == nil || key == nil {
		return nil, errors.New("graph: no encrypted content or no key")
	}
	if len(ec.Data) > maxEncryptedData*4/3+4 {
		return nil, errors.New("graph: encrypted content too large")
	}
	wrapped, err1 := base64.StdEncoding.DecodeString(ec.DataKey)
	data, err2 := base64.StdEncoding.DecodeString(ec.Data)
	sig, err3 := base64.StdEncoding.DecodeString(ec.DataSignature)
	if err1 != nil || err2 != nil || err3 != nil {
		return nil, errors.New("graph: encrypted content is not base64")
	}
	symKey, err := rsa.DecryptOAEP(sha1.New(), nil, key, wrapped, nil)
	if err != nil || len(symKey) != 32 {
		return nil, errors.New("graph: the data key does not open with our certificate")
	}
	mac := hmac.New(sha256.New, symKey)
	mac.Write(data)
	if !hmac.Equal(mac.Sum(nil), sig) {
		return nil, errors.New("graph: dataSignature does not match: not decrypted")
	}
	if len(data) == 0 || len(data)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("graph: encrypted data of %d bytes is not whole AES blocks", len(data))
	}
	block, _ := aes.NewCipher(symKey)
	plain := make([]byte, len(data))
	cipher.NewCBCDecrypter(block, symKey[:aes.BlockSize]).CryptBlocks(plain, data)
	pad := int(plain[len(plain)-1])
	if pad == 0 || pad > aes.BlockSize || pad > len(plain) {
		return nil, errors.New("graph: bad padding")
	}
	for _, b := range plain[len(plain)-pad:] {
		if int(b) != pad {
			return nil, errors.New("graph: bad padding")
		}
	}
	return plain[:len(plain)-pad], nil
}
