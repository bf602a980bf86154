package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Client calls Microsoft Graph's REST API with typed structs (the Graph SDK
// is not needed for six calls, and its build cost is heavy). HTTP must add
// the app-only token (an oauth2.Transport over the app's TokenSource).
type Client struct {
	HTTP    *http.Client
	BaseURL string // e.g. https://graph.microsoft.com/v1.0
}

// Error is a Graph error answer.
type Error struct {
	Status     int
	Code       string        // Graph's error code, e.g. ResourceNotFound
	Message    string        // Graph's message (never personal data of ours)
	RetryAfter time.Duration // from Retry-After on 429 and 503
}

func (e *Error) Error() string {
	return fmt.Sprintf("graph: HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// IsStatus reports whether err is a Graph error with that HTTP status.
func IsStatus(err error, status int) bool {
	e, ok := err.(*Error)
	return ok && e.Status == status
}

const maxAnswer = 1 << 20

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	res, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, maxAnswer))
	if err != nil {
		return err
	}
	if res.StatusCode >= 300 {
		e := &Error{Status: res.StatusCode}
		var ge struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(data, &ge) == nil {
			e.Code, e.Message = ge.Error.Code, ge.Error.Message
		}
		if s, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil && s >= 0 {
			e.RetryAfter = time.Duration(s) * time.Second
		}
		return e
	}
	if out == nil || res.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("graph: %s %s: malformed answer: %w", method, path, err)
	}
	return nil
}

// CreateSubscription creates a subscription; Graph validates the
// notification URLs before it answers.
func (c *Client) CreateSubscription(ctx context.Context, s Subscription) (Subscription, error) {
	var out Subscription
	err := c.do(ctx, http.MethodPost, "/subscriptions", s, &out)
	return out, err
}

// RenewSubscription moves a subscription's expiry (and, with cert, its
// encryption certificate).
func (c *Client) RenewSubscription(ctx context.Context, id string, exp time.Time, cert, certID string) (Subscription, error) {
	in := Subscription{ExpirationDateTime: exp.UTC(), EncryptionCertificate: cert, EncryptionCertificateID: certID}
	var out Subscription
	err := c.do(ctx, http.MethodPatch, "/subscriptions/"+url.PathEscape(id), in, &out)
	return out, err
}

// DeleteSubscription deletes a subscription; one that is gone already is
// not an error.
func (c *Client) DeleteSubscription(ctx context.Context, id string) error {
	err := c.do(ctx, http.MethodDelete, "/subscriptions/"+url.PathEscape(id), nil, nil)
	if IsStatus(err, http.StatusNotFound) {
		return nil
	}
	return err
}

// UserExists reports whether the tenant has the user (users/{id}, a read):
// false, nil when Graph answers 404.
func (c *Client) UserExists(ctx context.Context, user string) (bool, error) {
	var u struct {
		ID string `json:"id"`
	}
	err := c.do(ctx, http.MethodGet, "/users/"+url.PathEscape(user)+"?$select=id", nil, &u)
	if IsStatus(err, http.StatusNotFound) {
		return false, nil
	}
	return err == nil, err
}

// InboxUnread returns the unread count of the user's Inbox.
func (c *Client) InboxUnread(ctx context.Context, user string) (int, error) {
	var f struct {
		UnreadItemCount *int `json:"unreadItemCount"`
	}
	if err := c.do(ctx, http.MethodGet, "/users/"+url.PathEscape(user)+"/mailFolders/inbox?$select=unreadItemCount", nil, &f); err != nil {
		return 0, err
	}
	if f.UnreadItemCount == nil {
		return 0, fmt.Errorf("graph: the Inbox answer has no unreadItemCount")
	}
	return *f.UnreadItemCount, nil
}

// Message returns a message's subject, sender and read state.
func (c *Client) Message(ctx context.Context, user, id string) (*Message, error) {
	var m Message
	err := c.do(ctx, http.MethodGet, "/users/"+url.PathEscape(user)+"/messages/"+url.PathEscape(id)+"?$select=subject,from,isRead", nil, &m)
	if err != nil {
		return nil, err
	}
	return &m, nil
}
