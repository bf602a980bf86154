package graph_test

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"testing"

	"github.com/mailpush/mailpush/fake/graphfake"
	"github.com/mailpush/mailpush/graph"
)

const resource = `{"@odata.type":"#Microsoft.Graph.Message","id":"AAMk","subject":"Quarterly numbers","isRead":false,"from":{"emailAddress":{"name":"Adele","address":"adele@contoso.example"}}}`

func encrypted(t testing.TB, key *rsa.PrivateKey) *graph.EncryptedContent {
	t.Helper()
	data, dataKey, sig, err := graphfake.EncryptContent([]byte(resource), &key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return &graph.EncryptedContent{Data: data, DataKey: dataKey, DataSignature: sig, EncryptionCertificateID: "1"}
}

func TestDecryptContentVerifiesBeforeDecrypting(t *testing.T) {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	ec := encrypted(t, key)
	plain, err := graph.DecryptContent(ec, key)
	if err != nil || string(plain) != resource {
		t.Fatalf("DecryptContent = %q, %v", plain, err)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	flip := func(s string) string {
		b, _ := base64.StdEncoding.DecodeString(s)
		b[len(b)/2] ^= 1
		return base64.StdEncoding.EncodeToString(b)
	}
	for name, bad := range map[string]func(*graph.EncryptedContent){
		"data changed":      func(e *graph.EncryptedContent) { e.Data = flip(e.Data) },
		"signature changed": func(e *graph.EncryptedContent) { e.DataSignature = flip(e.DataSignature) },
		"key changed":       func(e *graph.EncryptedContent) { e.DataKey = flip(e.DataKey) },
		"other key's data":  func(e *graph.EncryptedContent) { *e = *encrypted(t, other) },
		"not base64":        func(e *graph.EncryptedContent) { e.Data = "%%%" },
		"truncated":         func(e *graph.EncryptedContent) { e.Data = e.Data[:len(e.Data)/2] },
	} {
		e := *ec
		bad(&e)
		if plain, err := graph.DecryptContent(&e, key); err == nil {
			t.Errorf("%s: decrypted %q", name, plain)
		}
	}
}

// FuzzDecryptContent: whatever arrives in encryptedContent, no panic, and
// nothing comes out without a valid signature.
func FuzzDecryptContent(f *testing.F) {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	ec := encrypted(f, key)
	f.Add(ec.Data, ec.DataKey, ec.DataSignature)
	f.Add("", "", "")
	f.Add("AAAA", ec.DataKey, "AAAA")
	f.Fuzz(func(t *testing.T, data, dataKey, sig string) {
		plain, err := graph.DecryptContent(&graph.EncryptedContent{Data: data, DataKey: dataKey, DataSignature: sig}, key)
		if err == nil && (data != ec.Data || sig != ec.DataSignature) && string(plain) == resource {
			t.Fatalf("forged content decrypted")
		}
	})
}
