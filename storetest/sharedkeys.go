package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/mailpush/mailpush"
)

// testSharedKeys: keys every node must hold come back opened, the
// latest-ending last, only while they have not ended; a second put under
// the same ID keeps the first value; kinds do not see each other; ended
// keys are deleted.
func testSharedKeys(t *testing.T, s mailpush.Store, e *env) {
	ctx := context.Background()
	now := e.clock.Now()
	put := func(kind, id, value string, notAfter time.Time) {
		t.Helper()
		if err := s.PutSharedKey(ctx, kind, id, []byte(value), notAfter); err != nil {
			t.Fatalf("PutSharedKey(%s, %s): %v", kind, id, err)
		}
	}
	put("graph-encryption", "b", "second key", now.Add(90*24*time.Hour))
	put("graph-encryption", "a", "first key", now.Add(60*24*time.Hour))
	put("graph-encryption", "a", "replaced?", now.Add(120*24*time.Hour))
	put("graph-encryption", "old", "ended key", now.Add(-time.Hour))
	put("other", "a", "another kind", now.Add(time.Hour))
	keys, err := s.SharedKeys(ctx, "graph-encryption", now)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].ID != "a" || string(keys[0].Value) != "first key" || keys[1].ID != "b" || string(keys[1].Value) != "second key" ||
		!keys[0].NotAfter.Equal(now.Add(60*24*time.Hour).Truncate(time.Millisecond)) {
		t.Fatalf("SharedKeys = %+v; want a then b, the first value kept, the ended one left out", keys)
	}
	if err := s.DeleteSharedKeys(ctx, "graph-encryption", now); err != nil {
		t.Fatal(err)
	}
	if keys, _ := s.SharedKeys(ctx, "graph-encryption", now.Add(-2*time.Hour)); len(keys) != 2 {
		t.Fatalf("after deleting the ended keys, %d left (seen from before they ended); want 2", len(keys))
	}
	if keys, _ := s.SharedKeys(ctx, "other", now); len(keys) != 1 || string(keys[0].Value) != "another kind" {
		t.Fatalf("the other kind's keys = %+v", keys)
	}
}
