package ews

import (
	"testing"

	"github.com/mailpush/mailpush"
)

func TestCredCacheBounded(t *testing.T) {
	c := newCredCache(3)
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		c.put(id, cachedCreds{serverURL: "u", creds: mailpush.Credentials{Username: id, Password: "p"}})
	}
	if len(c.m) != 3 {
		t.Errorf("cache holds %d entries, bound 3", len(c.m))
	}
	if v, ok := c.get("e"); !ok || v.creds.Username != "e" {
		t.Errorf("latest entry missing: %+v %v", v, ok)
	}
	c.drop("e")
	if _, ok := c.get("e"); ok {
		t.Error("dropped entry still there")
	}
}
