package main

import (
	"os"
	"path/filepath"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestClusterComposeFileLoads keeps deploy/cluster/compose.yaml true: every
// node's environment is a valid configuration naming the shared database.
func TestClusterComposeFileLoads(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "cluster", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatal(err)
	}
	nodes := 0
	for name, svc := range compose.Services {
		if svc.Environment["MAILPUSH_NODE_ID"] == "" {
			continue
		}
		nodes++
		var env []string
		for k, v := range svc.Environment {
			env = append(env, k+"="+v)
		}
		cfg, err := LoadConfig("", env)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if cfg.Database.Driver != "postgres" || cfg.NodeID != name || cfg.KeyDir != "/var/lib/mailpush/keys" {
			t.Errorf("%s: driver %q node %q keyDir %q", name, cfg.Database.Driver, cfg.NodeID, cfg.KeyDir)
		}
	}
	if nodes != 3 {
		t.Errorf("%d nodes in the compose file, want 3", nodes)
	}
}
