package fakeses_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sesv2"
	"github.com/aws/aws-sdk-go-v2/service/sesv2/types"
	"github.com/aws/smithy-go"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
)

// client is the real SDK client on url, in eu-west-1, without retries.
func client(url string) *sesv2.Client {
	return sesv2.New(sesv2.Options{
		Region: "eu-west-1", BaseEndpoint: aws.String(url), Retryer: aws.NopRetryer{},
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "secret", ""),
	})
}

// GetEmailIdentity answers in SES v2's wire shapes, as the SDK reads them.
func TestGetEmailIdentityWireShapes(t *testing.T) {
	fake := fakeses.New()
	c := client(fake.Start())
	defer fake.Close()
	fake.SetIdentity("pending.example", fakeses.IdentityPending)
	fake.SetIdentity("failed.example", fakeses.IdentityFailed)
	fake.SetIdentity("flaky.example", fakeses.IdentityTemporaryFailure)
	fake.SetIdentity("new.example", fakeses.IdentityNotStarted)
	fake.SetIdentity("Gone@Acme.Example", fakeses.IdentityMissing)
	fake.SetIdentity("waiting@acme.example", fakeses.IdentityPending)
	for _, tc := range []struct {
		identity string
		typ      types.IdentityType
		verified bool
		status   types.VerificationStatus
		errType  types.VerificationError
	}{
		{"acme.example", types.IdentityTypeDomain, true, types.VerificationStatusSuccess, ""},
		{"no-reply@acme.example", types.IdentityTypeEmailAddress, true, types.VerificationStatusSuccess, ""},
		{"waiting@acme.example", types.IdentityTypeEmailAddress, false, types.VerificationStatusPending, ""},
		{"pending.example", types.IdentityTypeDomain, false, types.VerificationStatusPending, ""},
		{"failed.example", types.IdentityTypeDomain, false, types.VerificationStatusFailed, types.VerificationErrorHostNotFound},
		{"flaky.example", types.IdentityTypeDomain, true, types.VerificationStatusTemporaryFailure, types.VerificationErrorDnsServerError},
		{"new.example", types.IdentityTypeDomain, false, types.VerificationStatusNotStarted, ""},
	} {
		out, err := c.GetEmailIdentity(context.Background(), &sesv2.GetEmailIdentityInput{EmailIdentity: aws.String(tc.identity)})
		if err != nil {
			t.Fatalf("%s: %v", tc.identity, err)
		}
		var errType types.VerificationError
		if out.VerificationInfo != nil {
			errType = out.VerificationInfo.ErrorType
		}
		if out.IdentityType != tc.typ || out.VerifiedForSendingStatus != tc.verified || out.VerificationStatus != tc.status || errType != tc.errType {
			t.Errorf("%s: type %s verified %v status %s error %s, want %s %v %s %s", tc.identity,
				out.IdentityType, out.VerifiedForSendingStatus, out.VerificationStatus, errType, tc.typ, tc.verified, tc.status, tc.errType)
		}
		if tc.typ == types.IdentityTypeDomain && (out.DkimAttributes == nil || len(out.DkimAttributes.Tokens) != 3) {
			t.Errorf("%s: DKIM attributes %+v", tc.identity, out.DkimAttributes)
		}
	}

	_, err := c.GetEmailIdentity(context.Background(), &sesv2.GetEmailIdentityInput{EmailIdentity: aws.String("gone@acme.example")})
	var nf *types.NotFoundException
	if !errors.As(err, &nf) || nf.ErrorMessage() != "Email identity gone@acme.example does not exist." {
		t.Errorf("a missing identity: %v, want NotFoundException", err)
	}
	fake.SetDefaultIdentityStatus(fakeses.IdentityMissing)
	if _, err := c.GetEmailIdentity(context.Background(), &sesv2.GetEmailIdentityInput{EmailIdentity: aws.String("acme.example")}); !errors.As(err, &nf) {
		t.Errorf("a fresh account: %v, want NotFoundException", err)
	}
	want := []string{"acme.example", "no-reply@acme.example", "waiting@acme.example", "pending.example", "failed.example",
		"flaky.example", "new.example", "gone@acme.example", "acme.example"}
	if got := fake.IdentityLookups(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("lookups %q, want %q", got, want)
	}
}

func TestGetAccountReportsSandboxAndSending(t *testing.T) {
	fake := fakeses.New()
	c := client(fake.Start())
	defer fake.Close()
	for _, tc := range []struct{ sandbox, sending bool }{{false, true}, {true, true}, {true, false}, {false, false}} {
		fake.SetSandbox(tc.sandbox)
		fake.SetSendingEnabled(tc.sending)
		out, err := c.GetAccount(context.Background(), &sesv2.GetAccountInput{})
		if err != nil {
			t.Fatal(err)
		}
		if out.ProductionAccessEnabled == tc.sandbox || out.SendingEnabled != tc.sending || out.SendQuota == nil || out.SendQuota.MaxSendRate != 14 {
			t.Errorf("sandbox %v sending %v: ProductionAccessEnabled %v SendingEnabled %v quota %+v",
				tc.sandbox, tc.sending, out.ProductionAccessEnabled, out.SendingEnabled, out.SendQuota)
		}
	}
}

// SendEmail refuses what SES refuses, with SES's codes and words, through ServeHTTP and through
// the lean Accept alike.
func TestSendEmailRefusesUnverifiedIdentities(t *testing.T) {
	const notVerified = "Email address is not verified. The following identities failed the check in region EU-WEST-1: "
	for _, tc := range []struct {
		name  string
		setup func(*fakeses.Server)
		from  string
		to    []string
		code  string // "": accepted
		msg   string
	}{
		{name: "default: everything verified", setup: func(*fakeses.Server) {}, from: "Acme <no-reply@acme.example>", to: []string{"a@example.com"}},
		{name: "sandbox with every identity verified", setup: func(f *fakeses.Server) { f.SetSandbox(true) },
			from: "no-reply@acme.example", to: []string{"a@example.com"}},
		{name: "sender missing", setup: func(f *fakeses.Server) { f.SetDefaultIdentityStatus(fakeses.IdentityMissing) },
			from: "Acme <no-reply@acme.example>", to: []string{"a@example.com"}, code: "MessageRejected", msg: notVerified + "no-reply@acme.example"},
		{name: "sender's domain pending", setup: func(f *fakeses.Server) {
			f.SetDefaultIdentityStatus(fakeses.IdentityMissing)
			f.SetIdentity("acme.example", fakeses.IdentityPending)
		}, from: "no-reply@acme.example", to: []string{"a@example.com"}, code: "MessageRejected", msg: notVerified + "no-reply@acme.example"},
		{name: "a parent domain verifies a subdomain's sender", setup: func(f *fakeses.Server) {
			f.SetDefaultIdentityStatus(fakeses.IdentityMissing)
			f.SetIdentity("ACME.example", fakeses.IdentityTemporaryFailure)
		}, from: "no-reply@mail.acme.example", to: []string{"a@example.com"}},
		{name: "out of the sandbox, recipients are not checked", setup: func(f *fakeses.Server) {
			f.SetDefaultIdentityStatus(fakeses.IdentityMissing)
			f.SetIdentity("acme.example", fakeses.IdentityVerified)
		}, from: "no-reply@acme.example", to: []string{"a@example.com"}},
		{name: "sandbox: unverified recipients", setup: func(f *fakeses.Server) {
			f.SetSandbox(true)
			f.SetDefaultIdentityStatus(fakeses.IdentityMissing)
			f.SetIdentity("acme.example", fakeses.IdentityVerified)
			f.SetIdentity("ok@example.com", fakeses.IdentityVerified)
		}, from: "no-reply@acme.example", to: []string{"ok@example.com", "a@example.com", "success@simulator.amazonses.com"},
			code: "MessageRejected", msg: notVerified + "a@example.com"},
		{name: "sandbox: unverified sender and recipient", setup: func(f *fakeses.Server) {
			f.SetSandbox(true)
			f.SetDefaultIdentityStatus(fakeses.IdentityMissing)
		}, from: "no-reply@acme.example", to: []string{"a@example.com"}, code: "MessageRejected", msg: notVerified + "no-reply@acme.example, a@example.com"},
		{name: "sending paused", setup: func(f *fakeses.Server) { f.SetSendingEnabled(false) },
			from: "no-reply@acme.example", to: []string{"a@example.com"}, code: "SendingPausedException", msg: "Sending is paused for this account."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, lean := range []bool{false, true} {
				fake := fakeses.New()
				tc.setup(fake)
				accepted := 0
				if lean {
					fake.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
						if r.URL.Path != "/v2/email/outbound-emails" {
							return false
						}
						fake.Accept(w, r, func(fakeses.Message) { accepted++ })
						return true
					}
				}
				c := client(fake.Start())
				_, err := c.SendEmail(context.Background(), &sesv2.SendEmailInput{
					FromEmailAddress: aws.String(tc.from),
					Destination:      &types.Destination{ToAddresses: tc.to},
					Content: &types.EmailContent{Simple: &types.Message{
						Subject: &types.Content{Data: aws.String("s")}, Body: &types.Body{Text: &types.Content{Data: aws.String("t")}}}},
				})
				fake.Close()
				if !lean {
					accepted = len(fake.Messages())
				}
				var apiErr smithy.APIError
				switch {
				case tc.code == "" && (err != nil || accepted != 1):
					t.Errorf("lean %v: %v, %d accepted; want it accepted", lean, err, accepted)
				case tc.code != "" && (!errors.As(err, &apiErr) || apiErr.ErrorCode() != tc.code || apiErr.ErrorMessage() != tc.msg || accepted != 0):
					t.Errorf("lean %v: %v, %d accepted; want %s %q", lean, err, accepted, tc.code, tc.msg)
				}
			}
		})
	}
}
