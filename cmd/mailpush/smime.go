package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/smime"
)

// validateSMIME checks each tenant's smime block: its own keys, and that
// the tenant has a directory that reads the certificate attributes.
func (c *Config) validateSMIME(bad func(key, format string, args ...any)) {
	for _, name := range c.tenantNames() {
		tc := c.Tenants[name]
		if tc.SMIME == nil {
			continue
		}
		prefix := "tenants." + name + ".smime"
		sc := tc.SMIME.Defaults()
		badBlock(bad, prefix, sc.Validate())
		if tc.Directory == nil {
			bad(prefix, "needs tenants.%s.directory: the certificates come from the directory", name)
			continue
		}
		for _, a := range sc.CertificateAttributes {
			if !slices.ContainsFunc(tc.Directory.Attributes, func(b string) bool { return strings.EqualFold(a, b) }) {
				bad("tenants."+name+".directory.attributes", "must include %q, a certificate attribute of tenants.%s.smime", a, name)
			}
		}
	}
}

// openSMIME builds the S/MIME service for the tenants that configure it,
// on their directories; nil when none does.
func (m *Main) openSMIME(outbound http.RoundTripper) (*smime.Service, error) {
	tenants := map[string]smime.Tenant{}
	for _, name := range m.Config.tenantNames() {
		if sc := m.Config.Tenants[name].SMIME; sc != nil {
			tenants[name] = smime.Tenant{Config: *sc, Directory: m.Directories[name]}
		}
	}
	if len(tenants) == 0 {
		return nil, nil
	}
	svc, err := smime.New(smime.Options{
		Logger: m.Logger.With("component", "smime"), Clock: m.Clock, Hasher: m.Keys,
		HTTP: &http.Client{Transport: outbound, Timeout: 30 * time.Second},
	}, tenants)
	if err != nil {
		return nil, fmt.Errorf("config key %w", err)
	}
	return svc, nil
}

// runSMIME is `mailpush smime classify FILE [--password-file F]`: what each
// certificate of a PEM, DER or PKCS#12 file may do, as JSON.
func runSMIME(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("smime classify", "smime classify FILE [--password-file F]   (PEM, DER or PKCS#12: signing-only, encryption-only or both)", stdout, stderr)
	pwFile := fs.String("password-file", "", "file holding the PKCS#12 password")
	pos, err := parseFlags(fs, args, "FILE")
	if err != nil {
		return err
	}
	file := pos[0]
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	password := ""
	if *pwFile != "" {
		b, err := os.ReadFile(*pwFile)
		if err != nil {
			return err
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	got, err := smime.Classify(data, password)
	if err != nil {
		return fmt.Errorf("%s: %s (%s)", file, mailpush.ErrorMessage(err), mailpush.ErrorCode(err))
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(got)
}
