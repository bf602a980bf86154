package graphfake

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"errors"
)

// EncryptContent encrypts resource data for a rich notification as Graph
// does, to the subscriber's certificate public key: a fresh 32-byte key
// RSA-OAEP (SHA-1) encrypted; the data AES-256-CBC with the key's first 16
// bytes as IV and PKCS#7 padding; dataSignature the HMAC-SHA256 of the
// encrypted data under the key. It returns data, dataKey, dataSignature in
// base64.
func EncryptContent(plain []byte, pub *rsa.PublicKey) (data, dataKey, dataSignature string, err error) {
	if pub == nil {
		return "", "", "", errors.New("graphfake: no public key")
	}
	key := make([]byte, 32)
	rand.Read(key)
	wrapped, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, pub, key, nil)
	if err != nil {
		return "", "", "", err
	}
	pad := aes.BlockSize - len(plain)%aes.BlockSize
	padded := append(append([]byte(nil), plain...), bytes.Repeat([]byte{byte(pad)}, pad)...)
	block, _ := aes.NewCipher(key)
	enc := make([]byte, len(padded))
	cipher.NewCBCEncrypter(block, key[:aes.BlockSize]).CryptBlocks(enc, padded)
	mac := hmac.New(sha256.New, key)
	mac.Write(enc)
	b64 := base64.StdEncoding.EncodeToString
	return b64(enc), b64(wrapped), b64(mac.Sum(nil)), nil
}
