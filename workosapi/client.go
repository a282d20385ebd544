package workosapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/buger/jsonparser"
	"github.com/workos/workos-go/v4/pkg/events"
	"github.com/workos/workos-go/v4/pkg/organizations"
	"github.com/workos/workos-go/v4/pkg/passwordless"
	"github.com/workos/workos-go/v4/pkg/usermanagement"
	"github.com/workos/workos-go/v4/pkg/workos_errors"
)

// Client talks to the WorkOS API through the official workos-go clients.
type Client struct {
	key    *keyHolder
	base   string
	hc     *http.Client
	events *events.Client
	um     *usermanagement.Client
	orgs   *organizations.Client
	pwl    *passwordless.Client
	// names caches organization and inviter names and users' locales, which every
	// invitation or code shows: a batch to one organization or user would otherwise read the
	// same objects for each, against WorkOS's user-management read limit (1,000 per 10 s).
	names *nameCache
	// budget is what every request waits on; nil: none.
	budget *Budget
}

// New builds the SDK clients. workos-go drops response headers and status codes, so the HTTP
// transport is wrapped to read what it drops (answerTransport). timeout bounds one request;
// 0 is 15 s. Every request waits on budget (nil: none), which clients may share.
func New(apiKey, baseURL string, timeout time.Duration, budget *Budget) *Client {
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	key := &keyHolder{}
	key.key.Store(&apiKey)
	hc := &http.Client{Timeout: timeout, Transport: answerTransport{base: workosTransport(), key: key}}
	base := strings.TrimRight(baseURL, "/")
	um := usermanagement.NewClient(apiKey)
	um.Endpoint = base
	um.HTTPClient = hc
	return &Client{
		key:    key,
		base:   base,
		hc:     hc,
		events: &events.Client{APIKey: apiKey, Endpoint: base, HTTPClient: &http.Client{Timeout: timeout, Transport: oldestFirst{hc.Transport}}},
		um:     um,
		orgs:   &organizations.Client{APIKey: apiKey, Endpoint: base, HTTPClient: hc},
		pwl:    &passwordless.Client{APIKey: apiKey, Endpoint: base, HTTPClient: hc},
		names:  newNameCache(nameTTL, time.Now),

		budget: budget,
	}
}

// KeyRejected reports whether WorkOS refused the API key (401 or 403) on the last answer that
// said anything about it: readiness and status show it, since nothing works until a person
// fixes WORKOS_API_KEY.
func (c *Client) KeyRejected() bool { return c.key.rejected.Load() }

// ListEvents fetches one page of events.
func (c *Client) ListEvents(ctx context.Context, req ListRequest) (Page, error) {
	opts := events.ListEventsOpts{Events: req.Types, Limit: req.Limit, After: req.After}
	if req.After == "" && !req.Since.IsZero() {
		opts.RangeStart = req.Since.UTC().Format(time.RFC3339Nano)
	}
	resp, err := call(ctx, c.budget, "list events", func(ctx context.Context) (events.ListEventsResponse, error) {
		return c.events.ListEvents(ctx, opts)
	})
	if err != nil {
		return Page{}, err
	}
	page := Page{Events: make([]Event, 0, len(resp.Data))}
	for i, e := range resp.Data {
		if e.ID == "" {
			// It could be neither recorded nor paged past: an unreadable answer, retried like one.
			return Page{}, &APIError{Status: http.StatusBadGateway, Err: errors.New("WorkOS list events: an event without an id")}
		}
		if !ValidEventID(e.ID) {
			// Likewise: the store keeps records and the cursor by event id and refuses ids that
			// no WorkOS event has.
			return Page{}, &APIError{Status: http.StatusBadGateway,
				Err: fmt.Errorf("WorkOS list events: an event id %q that is not a WorkOS event id", truncate(e.ID, 80))}
		}
		if i > 0 && e.CreatedAt.Before(resp.Data[i-1].CreatedAt) {
			// The cursor is the page's last event: on a newest-first page it would jump past
			// everything else. Refuse the page rather than lose events.
			return Page{}, &APIError{Status: http.StatusBadGateway, Err: errors.New("WorkOS list events: the page is not oldest-first")}
		}
		page.Events = append(page.Events, Event{ID: e.ID, Type: e.Event, CreatedAt: e.CreatedAt, Data: e.Data})
	}
	return page, nil
}

// Objects are the WorkOS objects emails are built from, by the name WorkOS gives them (their
// "object" field), and how each is read.
var Objects = map[string]func(c *Client, ctx context.Context, id string) (Object, error){
	"invitation":         (*Client).invitation,
	"magic_auth":         (*Client).magicAuth,
	"email_verification": (*Client).emailVerification,
	"password_reset":     (*Client).passwordReset,
	"radar_challenge":    (*Client).radarChallenge,
	"user":               (*Client).user,
}

// Get reads the object of type object (a key of Objects) with its secret parts.
func (c *Client) Get(ctx context.Context, object, id string) (Object, error) {
	read, ok := Objects[object]
	if !ok {
		return Object{}, fmt.Errorf("no WorkOS reader for objects of type %q", object)
	}
	o, err := read(c, ctx, id)
	o.Type = object
	return o, err
}

func (c *Client) invitation(ctx context.Context, id string) (Object, error) {
	inv, err := get(ctx, c.budget, "invitation", id, func(ctx context.Context) (usermanagement.Invitation, error) {
		return c.um.GetInvitation(ctx, usermanagement.GetInvitationOpts{Invitation: id})
	}, func(v usermanagement.Invitation) string { return v.ID }, nil)
	if err != nil {
		return Object{}, err
	}
	return withExpiry(Object{
		ID: inv.ID, Email: inv.Email, State: string(inv.State),
		OrganizationID: inv.OrganizationID, InviterUserID: inv.InviterUserID,
		Token: inv.Token, Link: inv.AcceptInvitationUrl,
	}, inv.ExpiresAt)
}

func (c *Client) magicAuth(ctx context.Context, id string) (Object, error) {
	ma, err := get(ctx, c.budget, "magic_auth", id, func(ctx context.Context) (usermanagement.MagicAuth, error) {
		return c.um.GetMagicAuth(ctx, usermanagement.GetMagicAuthOpts{MagicAuth: id})
	}, func(v usermanagement.MagicAuth) string { return v.ID }, nil)
	if err != nil {
		return Object{}, err
	}
	return withExpiry(Object{ID: ma.ID, Email: ma.Email, UserID: ma.UserId, Code: ma.Code}, ma.ExpiresAt)
}

func (c *Client) emailVerification(ctx context.Context, id string) (Object, error) {
	ev, err := get(ctx, c.budget, "email_verification", id, func(ctx context.Context) (usermanagement.EmailVerification, error) {
		return c.um.GetEmailVerification(ctx, usermanagement.GetEmailVerificationOpts{EmailVerification: id})
	}, func(v usermanagement.EmailVerification) string { return v.ID }, nil)
	if err != nil {
		return Object{}, err
	}
	return withExpiry(Object{ID: ev.ID, Email: ev.Email, UserID: ev.UserId, Code: ev.Code}, ev.ExpiresAt)
}

func (c *Client) passwordReset(ctx context.Context, id string) (Object, error) {
	pr, err := get(ctx, c.budget, "password_reset", id, func(ctx context.Context) (usermanagement.PasswordReset, error) {
		return c.um.GetPasswordReset(ctx, usermanagement.GetPasswordResetOpts{PasswordReset: id})
	}, func(v usermanagement.PasswordReset) string { return v.ID }, nil)
	if err != nil {
		return Object{}, err
	}
	return withExpiry(Object{ID: pr.ID, Email: pr.Email, UserID: pr.UserId, Token: pr.PasswordResetToken, Link: pr.PasswordResetUrl}, pr.ExpiresAt)
}

// radarChallenge is the one object workos-go v4.46.1 has no client for: the request is made
// here, through the same HTTP client, and WorkOS's errors are read by workos-go's own reader.
func (c *Client) radarChallenge(ctx context.Context, id string) (Object, error) {
	type radarChallenge struct {
		ID        string `json:"id"`
		Type      string `json:"type"`
		UserID    string `json:"user_id"`
		Email     string `json:"email"`
		ExpiresAt string `json:"expires_at"`
		Code      string `json:"code"`
	}
	rc, err := get(ctx, c.budget, "radar_challenge", id, func(ctx context.Context) (radarChallenge, error) {
		var rc radarChallenge
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/user_management/radar_challenges/"+id, nil)
		if err != nil {
			return rc, err
		}
		req.Header.Set("Authorization", "Bearer "+c.key.current())
		req.Header.Set("Content-Type", "application/json")
		res, err := c.hc.Do(req)
		if err != nil {
			return rc, err
		}
		defer res.Body.Close()
		if err := workos_errors.TryGetHTTPError(res); err != nil {
			return rc, err
		}
		return rc, json.NewDecoder(res.Body).Decode(&rc)
	}, func(v radarChallenge) string { return v.ID }, nil)
	if err != nil {
		return Object{}, err
	}
	if rc.Type != "" && rc.Type != "email" {
		return Object{}, &APIError{Status: http.StatusUnprocessableEntity,
			Err: fmt.Errorf("WorkOS radar challenge %s is of type %q, not email", rc.ID, truncate(rc.Type, 40))}
	}
	return withExpiry(Object{ID: rc.ID, Email: rc.Email, UserID: rc.UserID, Code: rc.Code}, rc.ExpiresAt)
}

// user is read fresh, not from the name cache: whether the address is verified decides.
func (c *Client) user(ctx context.Context, id string) (Object, error) {
	var locale string
	u, err := c.getUser(ctx, id, &locale)
	if err != nil {
		return Object{}, err
	}
	c.names.put(id, person(u, locale))
	return Object{ID: u.ID, Email: u.Email, UserID: u.ID, FirstName: strings.TrimSpace(u.FirstName),
		EmailVerified: u.EmailVerified, Metadata: u.Metadata, Locale: locale}, nil
}

// getUser reads a user and the locale workos-go's User struct drops.
func (c *Client) getUser(ctx context.Context, id string, locale *string) (usermanagement.User, error) {
	return get(ctx, c.budget, "user", id, func(ctx context.Context) (usermanagement.User, error) {
		return c.um.GetUser(ctx, usermanagement.GetUserOpts{User: id})
	}, func(v usermanagement.User) string { return v.ID }, func(body []byte) {
		*locale, _ = jsonparser.GetString(body, "locale")
	})
}

func withExpiry(o Object, expiresAt string) (Object, error) {
	t, err := time.Parse(time.RFC3339Nano, expiresAt)
	if err != nil {
		return Object{}, &APIError{Status: http.StatusUnprocessableEntity,
			Err: fmt.Errorf("WorkOS object %s has no valid expires_at (%q)", o.ID, truncate(expiresAt, 40))}
	}
	o.ExpiresAt = t
	return o, nil
}

// OrganizationName returns the organization's display name.
func (c *Client) OrganizationName(ctx context.Context, id string) (string, error) {
	p, err := c.names.read(ctx, id, func(ctx context.Context) (Person, error) {
		org, err := call(ctx, c.budget, "get organization", func(ctx context.Context) (organizations.Organization, error) {
			return c.orgs.GetOrganization(ctx, organizations.GetOrganizationOpts{Organization: id})
		})
		return Person{Name: org.Name}, err
	})
	return p.Name, err
}

// User returns a user's name, email and locale, cached for a minute.
func (c *Client) User(ctx context.Context, id string) (Person, error) {
	return c.names.read(ctx, id, func(ctx context.Context) (Person, error) {
		var locale string
		u, err := c.getUser(ctx, id, &locale)
		if err != nil {
			return Person{}, err
		}
		return person(u, locale), nil
	})
}

func person(u usermanagement.User, locale string) Person {
	return Person{Name: strings.TrimSpace(u.FirstName + " " + u.LastName), Email: u.Email, Metadata: u.Metadata, Locale: locale}
}

// MagicLink is a Passwordless Session of type MagicLink: Link signs the user in once, until
// ExpiresAt (15 minutes). The link is a secret.
type MagicLink struct {
	ID, Email, Link string
	ExpiresAt       time.Time
}

// CreateMagicLink creates a Passwordless Session for email (the legacy Magic Link API; WorkOS
// emits no event for it). redirectURI and state are optional. A POST: a call without an answer
// may still have created a session, which then goes unused.
func (c *Client) CreateMagicLink(ctx context.Context, email, redirectURI, state string) (MagicLink, error) {
	sess, err := call(ctx, c.budget, "create passwordless session", func(ctx context.Context) (passwordless.PasswordlessSession, error) {
		return c.pwl.CreateSession(ctx, passwordless.CreateSessionOpts{Email: email, Type: passwordless.MagicLink,
			RedirectURI: redirectURI, State: state})
	})
	if err != nil {
		return MagicLink{}, err
	}
	if sess.ID == "" || sess.Link == "" {
		return MagicLink{}, &APIError{Status: http.StatusBadGateway, Err: errors.New("WorkOS create passwordless session: the answer has no id or link (unreadable)")}
	}
	expires, err := time.Parse(time.RFC3339Nano, sess.ExpiresAt)
	if err != nil {
		return MagicLink{}, &APIError{Status: http.StatusBadGateway,
			Err: fmt.Errorf("WorkOS passwordless session %s has no valid expires_at (%q)", sess.ID, truncate(sess.ExpiresAt, 40))}
	}
	return MagicLink{ID: sess.ID, Email: sess.Email, Link: sess.Link, ExpiresAt: expires}, nil
}
