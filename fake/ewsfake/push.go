package ewsfake

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mailpush/mailpush"
)

// maxBatch is the most events in one notification; more set MoreEvents.
const maxBatch = 50

// maxAnswer caps the listener answers the fake reads.
const maxAnswer = 64 << 10

type subscription struct {
	id     string
	seq    int // creation order
	mb     *mailbox
	url    string
	freq   int // StatusFrequency, minutes
	types  []string
	active bool
	reason string

	// Guarded by Server.mu.
	pending []event // waiting for delivery, oldest first, at most Options.QueueSize
	prevWM  string  // the watermark just before pending[0]

	wake   chan struct{} // capacity 1: events were queued
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine ends, or by start when it never runs
}

func (sub *subscription) view() Subscription {
	return Subscription{
		ID:              sub.id,
		Address:         sub.mb.address,
		URL:             sub.url,
		StatusFrequency: sub.freq,
		EventTypes:      slices.Clone(sub.types),
		Active:          sub.active,
		EndReason:       sub.reason,
	}
}

// enqueueLocked queues the events the subscription asked for and returns
// how many old ones it dropped to stay within queueSize.
func (sub *subscription) enqueueLocked(evs []event, queueSize int) int {
	n := len(sub.pending)
	for _, ev := range evs {
		if slices.Contains(sub.types, ev.typ) {
			sub.pending = append(sub.pending, ev)
		}
	}
	if len(sub.pending) == n {
		return 0
	}
	dropped := 0
	if over := len(sub.pending) - queueSize; over > 0 {
		sub.prevWM = sub.pending[over-1].watermark // the gap shows in PreviousWatermark
		sub.pending = append(sub.pending[:0], sub.pending[over:]...)
		dropped = over
	}
	select {
	case sub.wake <- struct{}{}:
	default:
	}
	return dropped
}

// endLocked marks the subscription ended; its goroutine stops by itself or
// through stop.
func (s *Server) endLocked(sub *subscription, reason string) {
	if !sub.active {
		return
	}
	sub.active, sub.reason, sub.pending = false, reason, nil
	delete(sub.mb.subs, sub.id)
	s.notifyLocked()
	s.log.Info("ewsfake subscription ended", "subscription", sub.id, "reason", reason)
}

// stop cancels the subscription's goroutine and waits for it. Server.mu must
// not be held.
func (sub *subscription) stop() {
	sub.cancel()
	<-sub.done
}

// start runs the subscription's sender unless it ended meanwhile or the
// server is closed. Whoever creates a subscription must call start once.
func (s *Server) start(sub *subscription) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || !sub.active {
		close(sub.done)
		return
	}
	s.wg.Add(1)
	go s.run(sub.ctx, sub)
}

// notification is what one SendNotification carries.
type notification struct {
	prevWM string
	more   bool
	events []event
}

type takeMode int

const (
	takeStatus       takeMode = iota // a StatusEvent, whatever is queued (first notification)
	takeStatusOrNext                 // queued events, else a StatusEvent (idle timer fired)
	takeNext                         // queued events, if any
)

// take returns the next notification to send; ok is false when there is
// none, ended is true when the subscription is over.
func (s *Server) take(sub *subscription, mode takeMode) (n notification, ok, ended bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !sub.active {
		return n, false, true
	}
	if mode == takeStatus || (mode == takeStatusOrNext && len(sub.pending) == 0) {
		status := event{typ: statusEvent, watermark: sub.prevWM, unread: -1}
		return notification{prevWM: sub.prevWM, events: []event{status}}, true, false
	}
	if len(sub.pending) == 0 {
		return n, false, false
	}
	k := min(len(sub.pending), maxBatch)
	n = notification{prevWM: sub.prevWM, more: len(sub.pending) > k, events: slices.Clone(sub.pending[:k])}
	sub.prevWM = sub.pending[k-1].watermark
	sub.pending = append(sub.pending[:0], sub.pending[k:]...)
	return n, true, false
}

// run sends the subscription's notifications in order, one at a time, until
// it ends or ctx is cancelled.
func (s *Server) run(ctx context.Context, sub *subscription) {
	defer s.wg.Done()
	defer close(sub.done)
	defer sub.cancel()
	idle := s.scaled(time.Duration(sub.freq) * time.Minute)
	timer, fired := s.clock.NewTimer(idle)
	defer timer.Stop()
	mode := takeStatus
	var firedAt time.Time // when the idle timer fired, for takeStatusOrNext
	for {
		n, ok, ended := s.take(sub, mode)
		if ended {
			return
		}
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-sub.wake:
				mode = takeNext
			case firedAt = <-fired:
				mode = takeStatusOrNext
			}
			continue
		}
		// The next status event is due a StatusFrequency after this
		// notification, counted from when the idle timer fell due (not from
		// when this goroutine got to run): the timer is set before the
		// notification is sent, so that a test that moved the clock and saw
		// the listener get it knows where the next one stands.
		if mode == takeStatusOrNext {
			timer.Reset(firedAt.Add(idle).Sub(s.clock.Now()))
		} else {
			timer.Reset(idle)
		}
		if !s.deliver(ctx, sub, n) {
			return
		}
		mode = takeNext
	}
}

// deliver posts n until the listener takes it, retrying after 30 s doubling
// each time until StatusFrequency minutes are spent (all scaled). It reports
// whether the subscription goes on.
func (s *Server) deliver(ctx context.Context, sub *subscription, n notification) bool {
	body := renderNotification(sub.id, n)
	budget := s.scaled(time.Duration(sub.freq) * time.Minute)
	delay := s.scaled(30 * time.Second)
	var spent time.Duration
	for attempt := 1; ; attempt++ {
		s.mu.Lock()
		pause := s.callbackDelay
		s.mu.Unlock()
		if pause > 0 && mailpush.Sleep(ctx, mailpush.SystemClock{}, pause) != nil { // network delay: real time
			return false
		}
		status, answer, err := s.post(ctx, sub.url, body)
		if ctx.Err() != nil {
			return false // dropped, restarted or closed meanwhile: not an attempt
		}
		cb := Callback{SubscriptionID: sub.id, Attempt: attempt, Status: status, Result: answer, Events: len(n.events), At: s.clock.Now()}
		var end string
		switch {
		case err != nil:
			cb.Result = "error: " + err.Error()
			if spent+delay > budget {
				end = EndRetriesExhausted
			}
		case answer == "Unsubscribe":
			end = EndUnsubscribed
		}
		s.mu.Lock()
		s.callbacks = append(s.callbacks, cb)
		if over := len(s.callbacks) - s.maxCallbacks; over > 0 {
			s.callbacks = append(s.callbacks[:0], s.callbacks[over:]...)
		}
		if end != "" {
			s.endLocked(sub, end)
		}
		s.notifyLocked()
		s.mu.Unlock()
		s.log.Debug("ewsfake notification", "subscription", sub.id, "attempt", attempt, "status", status, "result", cb.Result, "events", len(n.events))
		if err == nil || end != "" {
			return end == ""
		}
		if mailpush.Sleep(ctx, s.clock, delay) != nil {
			return false
		}
		spent += delay
		delay *= 2
	}
}

// post sends one notification and returns the HTTP status and the
// listener's SubscriptionStatus.
func (s *Server) post(ctx context.Context, target string, body []byte) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, "", errors.New("bad subscription URL")
	}
	req.Header.Set("Content-Type", "text/xml; charset=utf-8")
	req.Header.Set("SOAPAction", `"`+nsMessages+`/SendNotification"`)
	req.Header.Set("User-Agent", "ExchangeServicesClient/15.01.2507.006")
	resp, err := s.hc.Do(req)
	if err != nil {
		// The URL may carry a token: keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return resp.StatusCode, "", fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, "", fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	if len(data) > maxAnswer {
		return resp.StatusCode, "", errors.New("answer too large")
	}
	status, err := parseResult(data)
	return resp.StatusCode, status, err
}

// parseResult reads the SubscriptionStatus of a SendNotificationResult.
func parseResult(data []byte) (string, error) {
	var env struct {
		XMLName xml.Name `xml:"http://schemas.xmlsoap.org/soap/envelope/ Envelope"`
		Body    struct {
			Result *struct {
				Status string `xml:"http://schemas.microsoft.com/exchange/services/2006/messages SubscriptionStatus"`
			} `xml:"http://schemas.microsoft.com/exchange/services/2006/messages SendNotificationResult"`
		} `xml:"http://schemas.xmlsoap.org/soap/envelope/ Body"`
	}
	if err := xml.Unmarshal(data, &env); err != nil {
		return "", errors.New("unparsable answer: not a SOAP envelope")
	}
	if env.Body.Result == nil {
		return "", errors.New("unparsable answer: no SendNotificationResult")
	}
	switch st := strings.TrimSpace(env.Body.Result.Status); st {
	case "OK", "Unsubscribe":
		return st, nil
	default:
		return "", fmt.Errorf("unparsable answer: SubscriptionStatus %q", truncate(st))
	}
}

// renderNotification writes the SendNotification request Exchange 2013+
// sends.
func renderNotification(subID string, n notification) []byte {
	var b bytes.Buffer
	b.Grow(700 + 600*len(n.events))
	b.WriteString(`<?xml version="1.0" encoding="utf-8"?>` + "\n")
	b.WriteString(`<soap11:Envelope xmlns:soap11="` + nsSOAP + `">`)
	b.WriteString(`<soap11:Header><t:RequestServerVersion xmlns:m="` + nsMessages + `" xmlns:t="` + nsTypes + `" Version="Exchange2013"/></soap11:Header>`)
	b.WriteString(`<soap11:Body><m:SendNotification xmlns:t="` + nsTypes + `" xmlns:m="` + nsMessages + `">`)
	b.WriteString(`<m:ResponseMessages><m:SendNotificationResponseMessage ResponseClass="Success">`)
	b.WriteString(`<m:ResponseCode>NoError</m:ResponseCode><m:Notification>`)
	b.WriteString(`<t:SubscriptionId>` + esc(subID) + `</t:SubscriptionId>`)
	b.WriteString(`<t:PreviousWatermark>` + esc(n.prevWM) + `</t:PreviousWatermark>`)
	b.WriteString(`<t:MoreEvents>` + strconv.FormatBool(n.more) + `</t:MoreEvents>`)
	for _, ev := range n.events {
		b.WriteString(`<t:` + ev.typ + `><t:Watermark>` + esc(ev.watermark) + `</t:Watermark>`)
		if ev.typ != statusEvent {
			b.WriteString(`<t:TimeStamp>` + ev.at.UTC().Format("2006-01-02T15:04:05Z") + `</t:TimeStamp>`)
			if ev.itemID != "" {
				b.WriteString(`<t:ItemId Id="` + esc(ev.itemID) + `" ChangeKey="CQAAAA=="/>`)
			} else {
				b.WriteString(`<t:FolderId Id="` + esc(ev.folderID) + `" ChangeKey="AQAAAA=="/>`)
			}
			b.WriteString(`<t:ParentFolderId Id="` + esc(ev.parentID) + `" ChangeKey="AQAAAA=="/>`)
			if ev.oldItemID != "" {
				b.WriteString(`<t:OldItemId Id="` + esc(ev.oldItemID) + `" ChangeKey="CQAAAA=="/>`)
			} else if ev.oldFolderID != "" {
				b.WriteString(`<t:OldFolderId Id="` + esc(ev.oldFolderID) + `" ChangeKey="AQAAAA=="/>`)
			}
			if ev.oldParentID != "" {
				b.WriteString(`<t:OldParentFolderId Id="` + esc(ev.oldParentID) + `" ChangeKey="AQAAAA=="/>`)
			}
			if ev.unread >= 0 {
				b.WriteString(`<t:UnreadCount>` + strconv.Itoa(ev.unread) + `</t:UnreadCount>`)
			}
		}
		b.WriteString(`</t:` + ev.typ + `>`)
	}
	b.WriteString(`</m:Notification></m:SendNotificationResponseMessage></m:ResponseMessages>`)
	b.WriteString(`</m:SendNotification></soap11:Body></soap11:Envelope>`)
	return b.Bytes()
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
