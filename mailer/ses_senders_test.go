package mailer

import (
	"context"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
)

// checkSES is an SES client on fake whose CheckSenders retries without waiting.
func checkSES(t *testing.T, fake *fakeses.Server, from string) *SES {
	t.Helper()
	url := fake.Start()
	t.Cleanup(fake.Close)
	s, err := NewSES(context.Background(), SESOptions{
		Region: "eu-west-1", Endpoint: url, From: from, Timeout: 5 * time.Second,
		Credentials:  credentials.NewStaticCredentialsProvider("AKID", "SECRET", "TOKEN"),
		checkBackoff: retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil }),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSESCheckSenders(t *testing.T) {
	const from = "Acme <no-reply@acme.example>"
	type identities map[string]fakeses.IdentityStatus
	for _, tc := range []struct {
		name string
		// fake's state: identities set, and the default for the rest (IdentityVerified).
		ids       identities
		missing   bool // default IdentityMissing
		sandbox   bool
		paused    bool
		intercept func(w http.ResponseWriter, r *http.Request) bool
		froms     []string

		wantSenders   []VerifiedSender
		wantSandbox   bool
		wantErr       []string // substrings of the error; nil: no error
		wantWarn      string
		wantUnchecked []string
		wantLookups   []string // nil: not checked
	}{{
		name:        "every identity verified",
		wantSenders: []VerifiedSender{{Address: "no-reply@acme.example", Identity: "no-reply@acme.example"}},
		wantLookups: []string{"no-reply@acme.example"},
	}, {
		name: "the domain is verified, the address has no identity",
		ids:  identities{"acme.example": fakeses.IdentityVerified}, missing: true,
		wantSenders: []VerifiedSender{{Address: "no-reply@acme.example", Identity: "acme.example", Domain: true}},
		wantLookups: []string{"no-reply@acme.example", "acme.example"},
	}, {
		name:        "the address is pending, its domain verified",
		ids:         identities{"no-reply@acme.example": fakeses.IdentityPending},
		wantSenders: []VerifiedSender{{Address: "no-reply@acme.example", Identity: "acme.example", Domain: true}},
		wantLookups: []string{"no-reply@acme.example", "acme.example"},
	}, {
		name:    "no identity at all",
		missing: true,
		wantErr: []string{"mailer.from no-reply@acme.example is not a verified SES sender (no-reply@acme.example: SES has no such identity; acme.example: SES has no such identity): " +
			"verify it in the SES console for region eu-west-1, or set mailer.from to a verified identity"},
		wantLookups: []string{"no-reply@acme.example", "acme.example"},
	}, {
		name: "the domain is pending verification",
		ids:  identities{"acme.example": fakeses.IdentityPending}, missing: true,
		wantErr: []string{"(no-reply@acme.example: SES has no such identity; acme.example: pending verification (SES has not found its DNS records yet)): verify it in the SES console for region eu-west-1"},
	}, {
		name: "the address is pending, the domain has no identity",
		ids:  identities{"no-reply@acme.example": fakeses.IdentityPending}, missing: true,
		wantErr: []string{"no-reply@acme.example: pending verification (the link SES mailed to the address was not followed yet); acme.example: SES has no such identity"},
	}, {
		name: "the domain failed verification",
		ids:  identities{"acme.example": fakeses.IdentityFailed}, missing: true,
		wantErr: []string{"acme.example: verification failed (HOST_NOT_FOUND)"},
	}, {
		name: "verification not started",
		ids:  identities{"acme.example": fakeses.IdentityNotStarted}, missing: true,
		wantErr: []string{"acme.example: verification not started"},
	}, {
		name: "a subdomain sends on its parent's verification",
		ids:  identities{"acme.example": fakeses.IdentityVerified}, missing: true,
		froms: []string{"Mail <hello@mail.acme.example>"},
		wantSenders: []VerifiedSender{
			{Address: "no-reply@acme.example", Identity: "acme.example", Domain: true},
			{Address: "hello@mail.acme.example", Identity: "acme.example", Domain: true},
		},
		// acme.example is asked about once.
		wantLookups: []string{"no-reply@acme.example", "acme.example", "hello@mail.acme.example", "mail.acme.example"},
	}, {
		name: "a domain SES cannot check right now still sends, with a warning",
		ids:  identities{"acme.example": fakeses.IdentityTemporaryFailure}, missing: true,
		wantSenders: []VerifiedSender{{Address: "no-reply@acme.example", Identity: "acme.example", Domain: true}},
		wantWarn:    "mailer.from no-reply@acme.example: SES cannot currently check the DNS records of its identity acme.example (TEMPORARY_FAILURE, DNS_SERVER_ERROR)",
	}, {
		name:        "the sandbox is reported, not an error",
		sandbox:     true,
		wantSandbox: true,
		wantSenders: []VerifiedSender{{Address: "no-reply@acme.example", Identity: "no-reply@acme.example"}},
	}, {
		name:    "sending paused for the account",
		paused:  true,
		wantErr: []string{"SES has paused sending for the account in region eu-west-1 (GetAccount: SendingEnabled false, enforcement status HEALTHY)"},
		// The senders are still checked.
		wantSenders: []VerifiedSender{{Address: "no-reply@acme.example", Identity: "no-reply@acme.example"}},
	}, {
		name: "an organization's from is not verified; the others are checked once each",
		ids: identities{"acme.example": fakeses.IdentityVerified, "globex.example": fakeses.IdentityPending,
			"xn--bcher-kva.example": fakeses.IdentityVerified}, missing: true,
		froms: []string{"", "Globex <no-reply@globex.example>", from, "NO-REPLY@ACME.EXAMPLE", "Bücher <hallo@Bücher.example>", "sales@globex.example"},
		wantSenders: []VerifiedSender{
			{Address: "no-reply@acme.example", Identity: "acme.example", Domain: true},
			{Address: "hallo@xn--bcher-kva.example", Identity: "xn--bcher-kva.example", Domain: true},
		},
		wantErr: []string{
			"organization from no-reply@globex.example is not a verified SES sender (no-reply@globex.example: SES has no such identity; globex.example: pending verification (SES has not found its DNS records yet)): " +
				"verify it in the SES console for region eu-west-1, or set the organization's from to a verified identity",
			"organization from sales@globex.example is not a verified SES sender",
		},
		wantLookups: []string{"no-reply@acme.example", "acme.example", "no-reply@globex.example", "globex.example",
			"hallo@xn--bcher-kva.example", "xn--bcher-kva.example", "sales@globex.example"},
	}, {
		name: "GetEmailIdentity denied names the permissions",
		intercept: func(w http.ResponseWriter, r *http.Request) bool {
			if !strings.HasPrefix(r.URL.Path, "/v2/email/identities/") {
				return false
			}
			fakeses.WriteError(w, http.StatusForbidden, "AccessDeniedException",
				"User: arn:aws:iam::123456789012:user/mailer is not authorized to perform: ses:GetEmailIdentity on resource: arn:aws:ses:eu-west-1:123456789012:identity/no-reply@acme.example")
			return true
		},
		wantErr: []string{"mailer.from no-reply@acme.example could not be checked (no-reply@acme.example: access denied; acme.example: access denied): " +
			"SES GetEmailIdentity no-reply@acme.example: access denied (SES answered 403: User: arn:aws:iam::123456789012:user/mailer is not authorized to perform: ses:GetEmailIdentity on resource: arn:aws:ses:eu-west-1:123456789012:",
			"): allow the daemon's AWS identity (IAM user or role) ses:GetAccount and ses:GetEmailIdentity (for the start-up check), besides ses:SendEmail"},
	}, {
		// The README's policy allows GetEmailIdentity on the domain's ARN only.
		name: "GetEmailIdentity denied for the address, allowed for its verified domain",
		ids:  identities{"acme.example": fakeses.IdentityVerified}, missing: true,
		intercept: func(w http.ResponseWriter, r *http.Request) bool {
			if !strings.Contains(r.URL.Path, "@") {
				return false
			}
			fakeses.WriteError(w, http.StatusForbidden, "AccessDeniedException", "User is not authorized to perform: ses:GetEmailIdentity")
			return true
		},
		wantSenders: []VerifiedSender{{Address: "no-reply@acme.example", Identity: "acme.example", Domain: true}},
		wantLookups: []string{"acme.example"},
	}, {
		name:    "GetEmailIdentity denied for the domain, the address has no identity",
		missing: true,
		intercept: func(w http.ResponseWriter, r *http.Request) bool {
			if !strings.HasPrefix(r.URL.Path, "/v2/email/identities/") || strings.Contains(r.URL.Path, "@") {
				return false
			}
			fakeses.WriteError(w, http.StatusForbidden, "AccessDeniedException", "User is not authorized to perform: ses:GetEmailIdentity")
			return true
		},
		wantErr: []string{"mailer.from no-reply@acme.example could not be checked (no-reply@acme.example: SES has no such identity; acme.example: access denied): " +
			"SES GetEmailIdentity acme.example: access denied (SES answered 403: User is not authorized to perform: ses:GetEmailIdentity): " +
			"allow the daemon's AWS identity (IAM user or role) ses:GetAccount and ses:GetEmailIdentity (for the start-up check), besides ses:SendEmail"},
		wantLookups: []string{"no-reply@acme.example"},
	}, {
		name: "GetAccount denied names the permissions; the senders are still checked",
		intercept: func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path != "/v2/email/account" {
				return false
			}
			fakeses.WriteError(w, http.StatusForbidden, "AccessDeniedException", "User is not authorized to perform: ses:GetAccount")
			return true
		},
		wantErr:     []string{"SES GetAccount: access denied (SES answered 403: User is not authorized to perform: ses:GetAccount): allow the daemon's AWS identity (IAM user or role) ses:GetAccount and ses:GetEmailIdentity"},
		wantSenders: []VerifiedSender{{Address: "no-reply@acme.example", Identity: "no-reply@acme.example"}},
	}, {
		// What aws-ses-v2-local answers to an operation it does not implement.
		name: "an emulator without GetEmailIdentity",
		intercept: func(w http.ResponseWriter, r *http.Request) bool {
			if !strings.HasPrefix(r.URL.Path, "/v2/email/identities/") {
				return false
			}
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte("<UnknownOperationException/>"))
			return true
		},
		// Not an error (the daemon starts against the emulator), but said.
		wantUnchecked: []string{"SES GetEmailIdentity no-reply@acme.example: the endpoint answered 404 without an SES answer: it does not implement GetEmailIdentity (an SES emulator at mailer.ses.endpoint?): the senders are not checked"},
		// It stops at the first: the endpoint does not have the operation for any.
		wantLookups: []string{},
	}, {
		name: "an endpoint without GetAccount",
		intercept: func(w http.ResponseWriter, r *http.Request) bool {
			if r.URL.Path != "/v2/email/account" {
				return false
			}
			fakeses.WriteError(w, http.StatusNotFound, "UnknownOperationException", "")
			return true
		},
		wantUnchecked: []string{"SES GetAccount: the endpoint answered 404 without an SES answer: it does not implement GetAccount (an SES emulator at mailer.ses.endpoint?): the sandbox and whether sending is enabled are not checked"},
		wantSenders:   []VerifiedSender{{Address: "no-reply@acme.example", Identity: "no-reply@acme.example"}},
	}, {
		name: "another SES error is in SES's words",
		intercept: func(w http.ResponseWriter, r *http.Request) bool {
			if !strings.HasPrefix(r.URL.Path, "/v2/email/identities/") {
				return false
			}
			fakeses.WriteError(w, http.StatusBadRequest, "BadRequestException", "Invalid identity.")
			return true
		},
		wantErr: []string{"SES GetEmailIdentity no-reply@acme.example (BadRequestException): SES answered 400: Invalid identity."},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			fake := fakeses.New()
			for id, st := range tc.ids {
				fake.SetIdentity(id, st)
			}
			if tc.missing {
				fake.SetDefaultIdentityStatus(fakeses.IdentityMissing)
			}
			fake.SetSandbox(tc.sandbox)
			fake.SetSendingEnabled(!tc.paused)
			fake.Intercept = tc.intercept
			s := checkSES(t, fake, from)
			got, err := s.CheckSenders(context.Background(), tc.froms...)

			if tc.wantErr == nil && err != nil {
				t.Fatalf("error: %v", err)
			}
			if tc.wantErr != nil && err == nil {
				t.Fatalf("no error, want %q", tc.wantErr)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error\n%v\nwant it to contain\n%s", err, want)
				}
			}
			if err != nil {
				for _, secret := range []string{"SECRET", "TOKEN", "operation error", "RequestID"} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("the error shows %q: %v", secret, err)
					}
				}
			}
			if !reflect.DeepEqual(got.Unchecked, tc.wantUnchecked) {
				t.Errorf("unchecked %q, want %q", got.Unchecked, tc.wantUnchecked)
			}
			if got.Region != "eu-west-1" || got.Sandbox != tc.wantSandbox {
				t.Errorf("region %q sandbox %v, want eu-west-1 %v", got.Region, got.Sandbox, tc.wantSandbox)
			}
			if !reflect.DeepEqual(got.Senders, tc.wantSenders) {
				t.Errorf("senders %+v\nwant %+v", got.Senders, tc.wantSenders)
			}
			if w := strings.Join(got.Warnings, "\n"); tc.wantWarn == "" && w != "" || !strings.Contains(w, tc.wantWarn) {
				t.Errorf("warnings %q, want %q", got.Warnings, tc.wantWarn)
			}
			if lookups := fake.IdentityLookups(); tc.wantLookups != nil && !reflect.DeepEqual(lookups, tc.wantLookups) && len(lookups)+len(tc.wantLookups) > 0 {
				t.Errorf("GetEmailIdentity asked about %q, want %q", lookups, tc.wantLookups)
			}
		})
	}
}

// SES allows its control-plane calls about one per second and answers more with 429: the
// check retries them (they are read-only) instead of failing the start.
func TestSESCheckSendersRetriesThrottling(t *testing.T) {
	fake := fakeses.New()
	var calls atomic.Int64
	fake.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if calls.Add(1)%2 == 1 {
			fakeses.WriteError(w, http.StatusTooManyRequests, "TooManyRequestsException", "Too many requests.")
			return true
		}
		return false
	}
	s := checkSES(t, fake, "no-reply@acme.example")
	got, err := s.CheckSenders(context.Background(), "hello@globex.example")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Senders) != 2 || calls.Load() != 6 {
		t.Errorf("senders %+v after %d calls, want 2 after 6 (GetAccount and 2 GetEmailIdentity, each throttled once)", got.Senders, calls.Load())
	}
	// Send stays without retries: SendEmail has no idempotency key.
	fake.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		fakeses.WriteError(w, http.StatusTooManyRequests, "TooManyRequestsException", "Too many requests.")
		return true
	}
	if _, err := s.Send(context.Background(), Message{To: "a@example.com", Subject: "s", HTML: "h", Text: "t"}); ClassOf(err) != Retry || fake.SendRequests() != 1 {
		t.Errorf("send: %v after %d requests, want one throttled try", err, fake.SendRequests())
	}
}

// A daemon that starts in the sandbox or from an unverified sender learns it at send time too:
// SES's "not verified" rejection pauses sending instead of killing the email, and its text keeps
// the addresses out.
func TestSESUnverifiedIdentitiesPauseSending(t *testing.T) {
	msg := Message{To: "jane@example.com", Subject: "s", HTML: "h", Text: "t", EventID: "event_1", Kind: "magic_auth"}
	for _, tc := range []struct {
		name  string
		setup func(*fakeses.Server)
		want  Class
		text  string
	}{
		{"sandbox, unverified recipient", func(f *fakeses.Server) {
			f.SetSandbox(true)
			f.SetDefaultIdentityStatus(fakeses.IdentityMissing)
			f.SetIdentity("acme.example", fakeses.IdentityVerified)
		}, Permanent, "the account is in the SES sandbox, where only verified recipients receive mail"},
		{"sandbox, sender and recipient unverified", func(f *fakeses.Server) {
			f.SetSandbox(true)
			f.SetDefaultIdentityStatus(fakeses.IdentityMissing)
		}, Paused, "failed the check in region EU-WEST-1: <address>, <address>"},
		{"not verified without a list", func(f *fakeses.Server) {
			f.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
				fakeses.WriteError(w, http.StatusBadRequest, "MessageRejected", "Email address is not verified.")
				return true
			}
		}, Paused, "SES answered 400: Email address is not verified."},
		{"sender not verified", func(f *fakeses.Server) {
			f.SetIdentity("no-reply@acme.example", fakeses.IdentityPending)
			f.SetIdentity("acme.example", fakeses.IdentityFailed)
		}, Paused, "failed the check in region EU-WEST-1: <address>"},
		{"sandbox, verified recipient", func(f *fakeses.Server) {
			f.SetSandbox(true)
			f.SetDefaultIdentityStatus(fakeses.IdentityMissing)
			f.SetIdentity("acme.example", fakeses.IdentityVerified)
			f.SetIdentity("jane@example.com", fakeses.IdentityVerified)
		}, 0, ""},
		{"content rejected stays permanent", func(f *fakeses.Server) {
			f.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
				fakeses.WriteError(w, http.StatusBadRequest, "MessageRejected", "Email rejected per DMARC policy for acme.example")
				return true
			}
		}, Permanent, "SES answered 400: Email rejected per DMARC policy for acme.example"},
		{"MAIL FROM domain not verified", func(f *fakeses.Server) {
			f.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
				fakeses.WriteError(w, http.StatusBadRequest, "MailFromDomainNotVerifiedException", "The sending domain isn't verified.")
				return true
			}
		}, Paused, "SES answered 400: The sending domain isn't verified."},
		{"sending paused", func(f *fakeses.Server) { f.SetSendingEnabled(false) }, Paused, "Sending is paused for this account."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := fakeses.New()
			tc.setup(fake)
			s := checkSES(t, fake, "Acme <no-reply@acme.example>")
			id, err := s.Send(context.Background(), msg)
			if tc.want == 0 {
				if err != nil || id == "" || len(fake.Messages()) != 1 {
					t.Fatalf("send: %q, %v; SES holds %d messages", id, err, len(fake.Messages()))
				}
				return
			}
			if ClassOf(err) != tc.want || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("err = %v (class %s), want %s with %q", err, ClassOf(err), tc.want, tc.text)
			}
			if strings.Contains(err.Error(), "@") {
				t.Errorf("error text shows an address: %v", err)
			}
			if tc.want == Paused && PauseReason(err) == "" {
				t.Errorf("no pause reason: %v", err)
			}
			if len(fake.Messages()) != 0 {
				t.Errorf("SES accepted %d messages", len(fake.Messages()))
			}
		})
	}
}
