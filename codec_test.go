package mailpush_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/seal"
)

// TestSealedAddressIsBoundToItsMailbox: a mailbox's sealed address holds
// no address in clear, opens for its mailbox, and does not open for
// another mailbox (a row's value copied into another row) or once damaged.
func TestSealedAddressIsBoundToItsMailbox(t *testing.T) {
	k, err := seal.Open(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := mailpush.StoreCodec{Cipher: k}
	sealed, err := c.SealAddress("mb1", "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("alice")) || bytes.Contains(sealed, []byte("example.com")) {
		t.Fatalf("the sealed address holds it in clear: %q", sealed)
	}
	if got := c.OpenAddress("mb1", sealed); got != "alice@example.com" {
		t.Fatalf("OpenAddress(mb1) = %q", got)
	}
	if got := c.OpenAddress("mb2", sealed); got != "" {
		t.Fatalf("OpenAddress(mb2) of mb1's sealed address = %q; want nothing", got)
	}
	sealed[len(sealed)-1] ^= 1
	if got := c.OpenAddress("mb1", sealed); got != "" {
		t.Fatalf("OpenAddress of a damaged value = %q", got)
	}
	if s, err := c.SealAddress("mb1", ""); err != nil || s != nil {
		t.Fatalf("SealAddress of no address = %v, %v; want nil", s, err)
	}
	// An update seals only an address that changed.
	m := &mailpush.Mailbox{ID: "mb1", StoredAddress: "alice@example.com"}
	if s, _ := c.AddressUpdate(m, "alice@example.com"); s != nil {
		t.Fatal("AddressUpdate sealed an unchanged address")
	}
	if s, _ := c.AddressUpdate(m, ""); c.OpenAddress("mb1", s) != "alice@example.com" {
		t.Fatal("AddressUpdate did not seal a learned address")
	}
}
