package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sesv2"
	"github.com/aws/aws-sdk-go-v2/service/sesv2/types"
	"github.com/workos/workos-go/v4/pkg/events"
	"github.com/workos/workos-go/v4/pkg/organizations"
	"github.com/workos/workos-go/v4/pkg/usermanagement"
	bolt "go.etcd.io/bbolt"

	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/mailer"
)

// runNaive is the loop a user would write from the WorkOS and AWS docs: list a page of events
// (workos-go events client), then for each event in turn Get its object (workos-go user
// management client; for an invitation also its organization and inviter, which the email
// shows), render it with the same templates, SendEmail (aws-sdk-go-v2 sesv2 client, default
// configuration), and save the cursor durably: one bbolt Update per event, which bbolt commits
// with fdatasync. Then the next page; an empty page waits the poll interval.
//
// It asks for order=asc as the worker does; without it WorkOS (and the fake) page newest-first.
// It checks no expiry or state and keeps no delivery records: that is what makes it naive.
func runNaive(spec runSpec, res *runResult, started func(time.Time), stop <-chan struct{}) error {
	ctx, cancel := stopContext(stop)
	defer cancel()
	if err := os.MkdirAll(spec.Dir, 0o700); err != nil {
		return err
	}
	dbPath := filepath.Join(spec.Dir, "cursor.db")
	db, err := bolt.Open(dbPath, 0o600, nil)
	if err != nil {
		return err
	}
	defer func() {
		if db != nil {
			db.Close()
		}
	}()
	bucket := []byte("cursor")
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucketIfNotExists(bucket); return err }); err != nil {
		return err
	}

	base := strings.TrimRight(spec.WorkOSURL, "/")
	evc := &events.Client{APIKey: benchAPIKey, Endpoint: base,
		HTTPClient: &http.Client{Timeout: 10 * time.Second, Transport: ascending{http.DefaultTransport}}}
	um := usermanagement.NewClient(benchAPIKey)
	um.Endpoint = base
	orgs := &organizations.Client{APIKey: benchAPIKey, Endpoint: base, HTTPClient: &http.Client{Timeout: 10 * time.Second}}
	awsCfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(benchCredentials()))
	if err != nil {
		return err
	}
	ses := sesv2.NewFromConfig(awsCfg, func(o *sesv2.Options) { o.BaseEndpoint = aws.String(spec.SESURL) })
	templates, err := mailer.LoadTemplates(mailer.TemplateOptions{Brand: benchBrand})
	if err != nil {
		return err
	}
	types := []string{"invitation.created", "magic_auth.created", "email_verification.created", "password_reset.created"}
	pageSize := spec.PageSize
	if pageSize <= 0 || pageSize > 100 {
		pageSize = 100
	}

	m, err := startMeasure(spec, dbPath)
	if err != nil {
		return err
	}
	started(m.start)
	defer m.stop(res)
	// Calls get a context that is never cancelled: stopping waits for the event in hand, so
	// no send is cut off midway.
	call := context.Background()
	cursor := ""
	for ctx.Err() == nil {
		page, err := evc.ListEvents(call, events.ListEventsOpts{Events: types, Limit: pageSize, After: cursor})
		if err != nil {
			return fmt.Errorf("list events: %w", err)
		}
		if len(page.Data) == 0 {
			if spec.StopWhenIdle {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(spec.PollInterval):
			}
			continue
		}
		for _, e := range page.Data {
			if ctx.Err() != nil {
				break
			}
			if err := naiveSend(call, e, um, orgs, ses, templates); err != nil {
				return fmt.Errorf("event %s: %w", e.ID, err)
			}
			res.Sent++
			if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put([]byte("after"), []byte(e.ID)) }); err != nil {
				return err
			}
			cursor = e.ID
		}
		if len(page.Data) < pageSize && !spec.StopWhenIdle {
			select {
			case <-ctx.Done():
			case <-time.After(spec.PollInterval):
			}
		}
	}
	m.stop(res)
	err = db.Close()
	db = nil
	res.StoreBytes = fileSize(dbPath)
	return err
}

func naiveSend(ctx context.Context, e events.Event, um *usermanagement.Client, orgs *organizations.Client,
	ses *sesv2.Client, templates *mailer.Templates) error {
	var ref struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(e.Data, &ref); err != nil {
		return err
	}
	data := mailer.Data{Now: time.Now()}
	var expires string
	switch e.Event {
	case "invitation.created":
		inv, err := um.GetInvitation(ctx, usermanagement.GetInvitationOpts{Invitation: ref.ID})
		if err != nil {
			return err
		}
		data.Kind, data.Email, data.Link, expires = kinds.Invitation, inv.Email, inv.AcceptInvitationUrl, inv.ExpiresAt
		if inv.OrganizationID != "" {
			org, err := orgs.GetOrganization(ctx, organizations.GetOrganizationOpts{Organization: inv.OrganizationID})
			if err != nil {
				return err
			}
			data.OrganizationName = org.Name
		}
		if inv.InviterUserID != "" {
			u, err := um.GetUser(ctx, usermanagement.GetUserOpts{User: inv.InviterUserID})
			if err != nil {
				return err
			}
			data.InviterName, data.InviterEmail = u.FirstName+" "+u.LastName, u.Email
		}
	case "magic_auth.created":
		ma, err := um.GetMagicAuth(ctx, usermanagement.GetMagicAuthOpts{MagicAuth: ref.ID})
		if err != nil {
			return err
		}
		data.Kind, data.Email, data.Code, expires = kinds.MagicAuth, ma.Email, ma.Code, ma.ExpiresAt
	case "email_verification.created":
		ev, err := um.GetEmailVerification(ctx, usermanagement.GetEmailVerificationOpts{EmailVerification: ref.ID})
		if err != nil {
			return err
		}
		data.Kind, data.Email, data.Code, expires = kinds.EmailVerification, ev.Email, ev.Code, ev.ExpiresAt
	case "password_reset.created":
		pr, err := um.GetPasswordReset(ctx, usermanagement.GetPasswordResetOpts{PasswordReset: ref.ID})
		if err != nil {
			return err
		}
		data.Kind, data.Email, data.Link, expires = kinds.PasswordReset, pr.Email, pr.PasswordResetUrl, pr.ExpiresAt
	default:
		return errors.New("unexpected event type " + e.Event)
	}
	data.ExpiresAt, _ = time.Parse(time.RFC3339Nano, expires)
	r, err := templates.Render(data)
	if err != nil {
		return err
	}
	utf8 := aws.String("UTF-8")
	_, err = ses.SendEmail(ctx, &sesv2.SendEmailInput{
		FromEmailAddress: aws.String(benchFrom),
		Destination:      &types.Destination{ToAddresses: []string{data.Email}},
		Content: &types.EmailContent{Simple: &types.Message{
			Subject: &types.Content{Data: aws.String(r.Subject), Charset: utf8},
			Body: &types.Body{
				Html: &types.Content{Data: aws.String(r.HTML), Charset: utf8},
				Text: &types.Content{Data: aws.String(r.Text), Charset: utf8},
			},
		}},
		// The benchmark tells sends apart by this tag; the worker sets the same ones.
		EmailTags: []types.MessageTag{
			{Name: aws.String("event_id"), Value: aws.String(e.ID)},
			{Name: aws.String("kind"), Value: aws.String(data.Kind)},
		},
	})
	return err
}

// ascending asks the Events API for oldest-first pages (its default is newest-first).
type ascending struct{ base http.RoundTripper }

func (t ascending) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	q := req.URL.Query()
	q.Set("order", "asc")
	req.URL.RawQuery = q.Encode()
	return t.base.RoundTrip(req)
}
