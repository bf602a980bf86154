package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/mailpush/mailpush/postgres/pgtest"
)

// TestClusterTokenRevokeReachesEveryNode: two nodes on one PostgreSQL; a
// token that both accept is revoked through node A's configuration, and the
// very next request with it is refused by node B as by node A. Tokens are
// verified against the store on every request (one read of the token and
// its tenant): no node keeps a token that another node or the CLI revoked.
func TestClusterTokenRevokeReachesEveryNode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs two servers")
	}
	url, schema := pgtest.Schema(t)
	w := newClusterWorld(t, 2, fmt.Sprintf("database: {driver: postgres, url: %q, schema: %s}", url, schema))
	const path = "/api/v1/registrations/00000000000000000000000000"
	for n := range w.bases {
		// Authenticated: the registration is not there (404), not 401.
		if st, body := apiCall(t, w.bases[n], "GET", path, w.token, nil); st != 404 {
			t.Fatalf("node %d before the revoke = %d %v, want 404", n, st, body)
		}
	}
	id, _, _ := strings.Cut(w.token, ".")
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"token", "revoke", id, "--tenant", "acme", "--config", w.configs[0]}, &out, &errOut, nil); err != nil {
		t.Fatalf("token revoke: %v (%s)", err, errOut.String())
	}
	for _, n := range []int{1, 0} {
		if st, body := apiCall(t, w.bases[n], "GET", path, w.token, nil); st != 401 {
			t.Errorf("node %d right after the revoke = %d %v, want 401", n, st, body)
		}
	}
	// The other tokens still work.
	if st, body := apiCall(t, w.bases[1], "GET", "/api/v1/gate/devices/NONE", w.admin, nil); st == 401 {
		t.Errorf("node 1 refused the admin token after the app token's revoke: %d %v", st, body)
	}
}
