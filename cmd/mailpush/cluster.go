package main

import (
	"context"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mailpush/mailpush"
	"github.com/mailpush/mailpush/postgres"
)

// A cluster is several `mailpush serve` nodes on one PostgreSQL database
// (database.driver: postgres). What each piece of in-memory state becomes
// with several nodes (docs/cluster.md has the whole list):
//
//   - The outbox and the subscription sweeps are shared through the store:
//     claims with leases (FOR UPDATE SKIP LOCKED in the outbox; the engine's
//     claim moves a mailbox's LastEventAt), so work is done once and a dead
//     node's leases run out and another node takes the work.
//   - The gate's device cache is per node, and every registry change is
//     broadcast (LISTEN/NOTIFY) so each node drops its cached answer at once.
//     The gate's rules are stored (gaterules.go); a console edit is applied
//     on its node and broadcast, and every other node reads them again.
//   - The per-tenant push rate and registration rates are split honestly:
//     each node sends tenantRate/(live nodes) and allows
//     registrations.rate/(live nodes), the live nodes counted from
//     heartbeats.
//   - The host-level dead-server rule runs on the leader only (an advisory
//     lock): its book of hosts is per node, and its heals are claimed
//     against the store's LastEventAt, so a host that other nodes still hear
//     is never healed.
//   - Graph's "a subscription is being created" state is in the mailbox
//     row (graph: creatingWatermark), since Graph's validation and first
//     notification reach whichever node the balancer picks.
//   - /readyz (Main.ready) fails with the reason while the database does not
//     answer, this node's broadcast or leadership connection is lost
//     (postgres: LinksReady) or its heartbeat fails.
//   - Per node by design: the sealed-credential cache (a node that lacks a
//     mailbox's credentials asks its devices to check in, as after a
//     restart), the per-mailbox fetch limiter (the bound is per node), the
//     background-push limiter per device.

// Cluster timings.
const (
	heartbeatEvery = 5 * time.Second
	liveWithin     = 3 * heartbeatEvery // a node silent this long is not counted
	leaderCheck    = 2 * time.Second
)

// cluster is the running cluster membership of a node.
type cluster struct {
	store  *postgres.Store
	nodeID string
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu           sync.Mutex
	heartbeatErr error // the last heartbeat's failure; nil once one succeeds
}

// defaultNodeID names a node when nodeId is not set: the host name and the
// listen port, stable across restarts of the same node.
func defaultNodeID(listen string) string {
	host, _ := os.Hostname()
	if i := strings.LastIndexByte(listen, ':'); i >= 0 {
		return host + listen[i:]
	}
	return host
}

// startCluster starts the heartbeats, the broadcast listener and the
// leader's work when the store is PostgreSQL; it does nothing on SQLite.
func (m *Main) startCluster() {
	store, ok := m.Store.(*postgres.Store)
	if !ok {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &cluster{store: store, nodeID: m.nodeID, cancel: cancel}
	m.cluster = c
	log := m.Logger.With("component", "cluster", "node", c.nodeID)

	c.wg.Add(1)
	go func() { // heartbeats, and this node's share of the tenant rates
		defer c.wg.Done()
		t, tick := m.Clock.NewTicker(heartbeatEvery)
		defer t.Stop()
		shared := 0
		for {
			err := store.Heartbeat(ctx, c.nodeID)
			if ctx.Err() == nil {
				c.mu.Lock()
				c.heartbeatErr = err
				c.mu.Unlock()
			}
			if err != nil && ctx.Err() == nil {
				log.Warn("heartbeat failed", "err", err)
			} else if n, err := store.LiveNodes(ctx, liveWithin); err == nil && n != shared {
				shared = n
				m.Pipeline.ShareTenantRate(n)
				m.Registrar.ShareRates(n)
				log.Info("live nodes", "nodes", n)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick:
			}
		}
	}()

	// The broadcast listener runs on every node, gate or not: /readyz
	// reports a node whose listener is lost (LinksReady), so the check means
	// the same everywhere.
	var gateTenant gateCache = noGate{}
	if m.Gate != nil {
		gateTenant = m.Gate
		m.GateRegistry.OnChange = func(tenantID, deviceID string) {
			gateTenant.Invalidate(tenantID, deviceID) // this node at once, even if the broadcast fails
			if err := store.Broadcast(ctx, gateChannel, tenantID+"/"+deviceID); err != nil {
				log.Warn("could not broadcast a gate change: other nodes see it within gate.cacheTtl", "err", err)
			}
		}
		// Rules edited in the console: this node applied them already; the
		// others read the stored list again (after a reconnection too).
		m.gateRulesChanged = func(ctx context.Context) {
			if err := store.Broadcast(ctx, gateRulesChannel, m.gateTenantID); err != nil {
				log.Warn("could not broadcast a gate rule change: other nodes apply it when they restart or next hear of one", "err", err)
			}
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			store.Listen(ctx, gateRulesChannel, func(string) {
				if err := m.reloadGateRules(ctx); err != nil && ctx.Err() == nil {
					log.Warn("could not apply the stored gate rules", "err", err)
				}
			})
		}()
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		store.Listen(ctx, gateChannel, func(payload string) {
			tenantID, deviceID, ok := strings.Cut(payload, "/")
			if !ok {
				gateTenant.InvalidateAll() // reconnected: changes may have been missed
				return
			}
			gateTenant.Invalidate(tenantID, deviceID)
		})
	}()

	if m.EWSEngine != nil && m.EWSEngine.HostRule.MinSubscriptions > 0 {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			store.Lead(ctx, "ews host rule", leaderCheck, func(lctx context.Context) {
				log.Info("leading: the EWS host-level rule runs here")
				interval := m.EWSEngine.HostCheckInterval
				if interval <= 0 {
					interval = 10 * time.Second
				}
				t, tick := m.Clock.NewTicker(interval)
				defer t.Stop()
				for {
					select {
					case <-lctx.Done():
						return
					case <-tick:
					}
					if res, err := m.EWSEngine.CheckHosts(lctx); err != nil && lctx.Err() == nil {
						log.Warn("host check failed", "err", err)
					} else if res.Stale > 0 {
						log.Info("host check healed a silent host's subscriptions", "stale", res.Stale, "resubscribed", res.Resubscribed)
					}
				}
			})
		}()
	}
	log.Info("cluster node started", "database", m.Config.databaseName())
}

// gateCache is what a broadcast changes: the gate's cached answers.
type gateCache interface {
	Invalidate(tenantID, deviceID string)
	InvalidateAll()
}

// noGate is the gateCache of a node without gate.tenant.
type noGate struct{}

func (noGate) Invalidate(string, string) {}
func (noGate) InvalidateAll()            {}

// ready reports why this node is not ready in the cluster: a lost
// broadcast or leadership connection (the store's LinksReady), or a failed
// heartbeat; nil on SQLite.
func (c *cluster) ready() error {
	if c == nil {
		return nil
	}
	if err := c.store.LinksReady(); err != nil {
		return err
	}
	c.mu.Lock()
	err := c.heartbeatErr
	c.mu.Unlock()
	if err != nil {
		return mailpush.WrapError(mailpush.EUnavailable, "this node's heartbeat failed: the other nodes no longer count it", err)
	}
	return nil
}

// gateChannel carries "<tenantID>/<deviceID>" for every gate registry change;
// gateRulesChannel the gate tenant's ID for every change of its rules.
const (
	gateChannel      = "gate"
	gateRulesChannel = "gate_rules"
)

func (c *cluster) close() {
	if c == nil {
		return
	}
	c.cancel()
	c.wg.Wait()
}
