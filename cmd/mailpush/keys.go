package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/seal"
)

// runKeys is `mailpush keys rotate|list|retire`. Rotating makes new current
// sealing and callback keys (one ID for both); older keys keep opening what
// they sealed until retired. Retiring deletes a key: credentials sealed to
// it are refused, and callback URLs sealed with it are answered Unsubscribe,
// their mailboxes resubscribed with the current key where the server holds
// the credentials in memory, else their devices asked to check in. Running
// servers pick both up within keyReloadInterval (see Main.reloadKeys).
func runKeys(verb string, args []string, stdout, stderr io.Writer, environ []string) error {
	synopsis := map[string]string{
		"rotate": "keys rotate [--config FILE]",
		"list":   "keys list [--config FILE]",
		"retire": "keys retire KEYID [--config FILE]",
	}[verb]
	fs := newFlags("keys "+verb, synopsis, stdout, stderr)
	path := configFlag(fs, environ)
	var names []string
	if verb == "retire" {
		names = []string{"KEYID"}
	}
	pos, err := parseFlags(fs, args, names...)
	if err != nil {
		return err
	}
	cfg, err := LoadConfig(*path, environ)
	if err != nil {
		return err
	}
	keys, err := seal.Open(cfg.KeyDir, time.Now())
	if err != nil {
		return err
	}
	switch verb {
	case "rotate":
		old, _ := keys.PublicKey()
		if err := keys.Rotate(time.Now()); err != nil {
			return err
		}
		id, _ := keys.PublicKey()
		fmt.Fprintf(stdout, "key %s is now current (was %s); running servers use it within %v. Retire %s once apps have the new key: mailpush keys retire %s\n",
			id, old, keyReloadInterval, old, old)
		return nil
	case "retire":
		if err := keys.Retire(pos[0], time.Now()); err != nil {
			return fmt.Errorf("keys retire %s: %s", pos[0], mailpush.ErrorMessage(err))
		}
		fmt.Fprintf(stdout, "key %s retired: what it sealed can no longer be opened; running servers resubscribe its mailboxes within %v\n", pos[0], keyReloadInterval)
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tSTATE\tCREATED")
	for _, k := range keys.Keys() {
		switch {
		case !k.Retired.IsZero():
			fmt.Fprintf(tw, "%s\t-\tretired %s\t-\n", k.ID, k.Retired.UTC().Format(time.RFC3339))
		case k.Current:
			fmt.Fprintf(tw, "%s\t%s\tcurrent\t%s\n", k.ID, k.Kind, k.Created.UTC().Format(time.RFC3339))
		default:
			fmt.Fprintf(tw, "%s\t%s\told\t%s\n", k.ID, k.Kind, k.Created.UTC().Format(time.RFC3339))
		}
	}
	return tw.Flush()
}

// keyReloadInterval is how often a running server looks at keyring.json
// for what `keys rotate` and `keys retire` wrote.
const keyReloadInterval = 10 * time.Second

// keysWatch is the goroutine that reloads the keyring; Main owns it.
type keysWatch struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// watchKeys starts reloading the keyring every keyReloadInterval.
func (m *Main) watchKeys() {
	ctx, cancel := context.WithCancel(context.Background())
	m.keysWatch = keysWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(m.keysWatch.done)
		ticker, tick := m.Clock.NewTicker(keyReloadInterval)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick:
			}
			if err := m.reloadKeys(ctx); err != nil && ctx.Err() == nil {
				m.Logger.Error("keyring reload failed; the keys in use stay", "err", err)
			}
		}
	}()
}

func (m *Main) stopWatchingKeys() {
	if m.keysWatch.cancel != nil {
		m.keysWatch.cancel()
		<-m.keysWatch.done
	}
}

// reloadKeys picks up a changed keyring: new current keys seal from now on,
// and the mailboxes whose callback URLs were sealed with a key retired since
// are made due for resubscription with the current one.
func (m *Main) reloadKeys(ctx context.Context) error {
	before := map[string]bool{}
	for _, k := range m.Keys.Keys() {
		if !k.Retired.IsZero() {
			before[k.ID] = true
		}
	}
	changed, err := m.Keys.Reload()
	if err != nil || !changed {
		return err
	}
	current, _ := m.Keys.PublicKey()
	var retired []string
	for _, k := range m.Keys.Keys() {
		if !k.Retired.IsZero() && !before[k.ID] {
			retired = append(retired, k.ID)
		}
	}
	m.Logger.Info("keyring reloaded", "current", current, "newlyRetired", len(retired))
	if len(retired) == 0 || m.EWS == nil {
		return nil
	}
	_, err = m.EWS.RetireKeys(ctx, retired)
	return err
}
