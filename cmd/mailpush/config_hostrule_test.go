package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestHostRuleConfig(t *testing.T) {
	dir := t.TempDir()
	load := func(body string) (Config, error) {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return LoadConfig(p, nil)
	}
	c, err := load("")
	if err != nil {
		t.Fatal(err)
	}
	if e := c.EWS; e.HostMinSubscriptions != 20 || e.HostSilence != time.Minute || e.HostOverdue != 5 || e.HostCheckInterval != 10*time.Second {
		t.Errorf("defaults = %d, %v, %d, %v", e.HostMinSubscriptions, e.HostSilence, e.HostOverdue, e.HostCheckInterval)
	}
	c, err = load("ews:\n  hostMinSubscriptions: 100\n  hostSilence: 90s\n  hostOverdue: 10\n  hostCheckInterval: 5s\n")
	if err != nil || c.EWS.HostMinSubscriptions != 100 || c.EWS.HostSilence != 90*time.Second || c.EWS.HostOverdue != 10 || c.EWS.HostCheckInterval != 5*time.Second {
		t.Errorf("set = %+v, %v", c.EWS, err)
	}
	for _, tc := range []struct{ body, key string }{
		{"ews:\n  hostMinSubscriptions: 0\n", "ews.hostMinSubscriptions"},
		{"ews:\n  hostOverdue: 0\n", "ews.hostOverdue"},
		{"ews:\n  hostMinSubscriptions: 3\n  hostOverdue: 4\n", "ews.hostOverdue"},
		{"ews:\n  hostSilence: 1s\n", "ews.hostSilence"},
		{"ews:\n  statusFrequency: 1\n  hostSilence: 2m\n", "ews.hostSilence"},
		{"ews:\n  hostCheckInterval: 0s\n", "ews.hostCheckInterval"},
		{"ews:\n  hostCheckInterval: 2m\n", "ews.hostCheckInterval"},
	} {
		if _, err := load(tc.body); err == nil || !strings.Contains(err.Error(), "config key "+tc.key) {
			t.Errorf("%q: error %v, want one naming %s", tc.body, err, tc.key)
		}
	}
}
