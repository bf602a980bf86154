package main

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/directory"
)

// validateDirectories checks each tenant's directory block
// (tenants.<name>.directory); the directory package names the key below it.
func (c *Config) validateDirectories(bad func(key, format string, args ...any)) {
	for _, name := range c.tenantNames() {
		d := c.Tenants[name].Directory
		if d == nil {
			continue
		}
		badBlock(bad, "tenants."+name+".directory", d.Defaults().Validate())
	}
}

// badBlock reports err of a block's Validate, whose messages start with
// the key below the block ("baseDn: required"), under the block's prefix.
func badBlock(bad func(key, format string, args ...any), prefix string, err error) {
	if err != nil {
		key, msg, _ := strings.Cut(err.Error(), ": ")
		bad(prefix+"."+key, "%s", msg)
	}
}

// openDirectories opens the directory of every tenant that configures one,
// by tenant name. It does not connect: a directory down at start comes up
// later, lookups meanwhile answer "directory unavailable". The caller
// closes what it gets.
func (c *Config) openDirectories(logger *slog.Logger, clock mailpush.Clock) (map[string]*directory.Directory, error) {
	out := map[string]*directory.Directory{}
	for _, name := range c.tenantNames() {
		cfg := c.Tenants[name].Directory
		if cfg == nil {
			continue
		}
		d, err := directory.New(*cfg, logger.With("tenant", name), clock)
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			return nil, fmt.Errorf("tenants.%s.directory: %w", name, err)
		}
		out[name] = d
	}
	return out, nil
}
