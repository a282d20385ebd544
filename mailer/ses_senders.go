package mailer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/sesv2"
	"github.com/aws/aws-sdk-go-v2/service/sesv2/types"
	"github.com/aws/smithy-go"
	"golang.org/x/net/idna"
)

// SenderCheck is what CheckSenders found out about the SES account and the From addresses.
type SenderCheck struct {
	// Region is the SES region that was asked.
	Region string
	// Sandbox is true when the account has no production access (GetAccount
	// ProductionAccessEnabled false): SES delivers only to verified addresses and domains (and
	// its mailbox simulator) and rejects mail to anyone else as "Email address is not verified".
	// It is not an error: a test account can work that way.
	Sandbox bool
	// Senders are the From addresses SES will send from, each with the identity that verifies
	// it; mailer.from first, then the others in the order given, each address once.
	Senders []VerifiedSender
	// Warnings are findings that do not stop sending now but need a person: a domain whose DNS
	// records SES cannot currently check (TEMPORARY_FAILURE) fails verification if it lasts.
	Warnings []string
	// Unchecked says, a sentence each, what could not be asked because the endpoint does not
	// implement GetAccount or GetEmailIdentity: it answered HTTP 404 without an SES error code
	// (or UnknownOperationException), as the aws-ses-v2-local emulator does for
	// GetEmailIdentity. Real SES never answers so. It is not an error: log it.
	Unchecked []string
}

// VerifiedSender is a From address and the verified SES identity that lets SES send from it.
type VerifiedSender struct {
	// Address is the bare address as SES is asked about it: the domain in lower case, an
	// internationalized domain in Punycode.
	Address string
	// Identity is the SES identity verified for sending that covers Address: the address
	// itself, its domain or a parent domain.
	Identity string
	// Domain is true when Identity is a domain.
	Domain bool
}

// unsupported is a check's call the endpoint does not implement (SenderCheck.Unchecked).
type unsupported struct{ msg string }

func (e *unsupported) Error() string { return e.msg }

func isUnsupported(err error) bool {
	var u *unsupported
	return errors.As(err, &u)
}

// CheckSenders asks SES, at start, whether it will send for the account and from each From
// address: mailer.from (SESOptions.From) and froms, the organizations' own from addresses
// ("" entries are skipped; an address repeated, in any letter case, is asked about once).
//
// It calls GetAccount once, then GetEmailIdentity for each address and, when SES has no such
// identity or has not verified it, for its domain and the domain's parents (a verified domain
// covers its addresses and subdomains). An address is usable when one of these identities is
// verified for sending (VerifiedForSendingStatus, and for a domain VerificationStatus SUCCESS;
// TEMPORARY_FAILURE is usable with a warning, as SES keeps sending from it for a while).
//
// The error joins what stops sending: an address SES will not send from (its text names the
// address, what SES said about each identity, and what to do), sending paused for the account
// (GetAccount SendingEnabled false), and calls that failed: access denied names the IAM
// permissions needed (ses:GetAccount, ses:GetEmailIdentity). GetEmailIdentity denied for one
// identity is only an error when no other identity of the address is verified: an IAM policy
// often allows it on the domain's ARN alone, as the README's does. Neither the sandbox
// (SenderCheck.Sandbox) nor an endpoint without the operations (SenderCheck.Unchecked) is an
// error. The SenderCheck holds what was found even when the error is not nil; Sandbox is
// false when GetAccount failed.
//
// The calls are read-only, so unlike SendEmail they are retried, with backoff, when SES
// throttles them (its control-plane operations allow about one call per second) or fails with
// a 5xx; each call, retries included, is bounded by SESOptions.Timeout. Errors never carry the
// credentials.
func (s *SES) CheckSenders(ctx context.Context, froms ...string) (SenderCheck, error) {
	region := s.client.Options().Region
	res := SenderCheck{Region: region}
	var errs []error

	ctxAccount, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	acct, err := s.client.GetAccount(ctxAccount, &sesv2.GetAccountInput{}, s.checkRetries())
	cancel()
	switch {
	case err != nil:
		if err = checkCallError("GetAccount", "", err); isUnsupported(err) {
			res.Unchecked = append(res.Unchecked, err.Error()+": the sandbox and whether sending is enabled are not checked")
		} else {
			errs = append(errs, err)
		}
	default:
		res.Sandbox = !acct.ProductionAccessEnabled
		if !acct.SendingEnabled {
			enforcement := ""
			if st := aws.ToString(acct.EnforcementStatus); st != "" {
				enforcement = ", enforcement status " + st
			}
			errs = append(errs, fmt.Errorf("SES has paused sending for the account in region %s (GetAccount: SendingEnabled false%s): no email can be sent until sending is resumed; see the account dashboard and reputation page in the SES console",
				region, enforcement))
		}
	}

	type sender struct{ label, key, raw string }
	senders := []sender{{"mailer.from", "mailer.from", s.opts.From}}
	for _, f := range froms {
		if f != "" {
			senders = append(senders, sender{"organization from", "the organization's from", f})
		}
	}
	seen := map[string]bool{}
	known := map[string]identityState{} // GetEmailIdentity answers, by identity
	for _, snd := range senders {
		addr, err := ParseSender(snd.raw)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", snd.label, err))
			continue
		}
		bare, domain, err := sesIdentityNames(addr.Address)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", snd.label, addr.Address, err))
			continue
		}
		if seen[strings.ToLower(bare)] {
			continue
		}
		seen[strings.ToLower(bare)] = true
		var found []identityState
		usable, ok := identityState{}, false
		for _, name := range append([]string{bare}, parentDomains(domain)...) {
			st, cached := known[name]
			if !cached {
				if st, err = s.identity(ctx, name); err != nil {
					// Transport or endpoint: the same for every identity left.
					if isUnsupported(err) {
						res.Unchecked = append(res.Unchecked, err.Error()+": the senders are not checked")
						err = nil
					}
					return res, errors.Join(append(errs, err)...)
				}
				known[name] = st
			}
			found = append(found, st)
			if st.usable() {
				usable, ok = st, true
				break
			}
		}
		if !ok {
			for _, st := range found {
				if st.denied != nil {
					// Nothing usable, and SES would not say about all: the permission is missing.
					errs = append(errs, fmt.Errorf("%s %s could not be checked (%s): %w", snd.label, bare, describeIdentities(found, domain), st.denied))
					ok = true
					break
				}
			}
			if !ok {
				errs = append(errs, fmt.Errorf("%s %s is not a verified SES sender (%s): verify it in the SES console for region %s, or set %s to a verified identity",
					snd.label, bare, describeIdentities(found, domain), region, snd.key))
			}
			continue
		}
		res.Senders = append(res.Senders, VerifiedSender{Address: bare, Identity: usable.name, Domain: usable.domain})
		if usable.status == types.VerificationStatusTemporaryFailure {
			res.Warnings = append(res.Warnings, fmt.Sprintf("%s %s: SES cannot currently check the DNS records of its identity %s (TEMPORARY_FAILURE%s); it still sends, but the identity fails verification if this lasts: check the domain's DNS records",
				snd.label, bare, usable.name, usable.errorTypeNote()))
		}
	}
	return res, errors.Join(errs...)
}

// checkRetries gives CheckSenders' read-only calls the SDK's standard retryer: unlike
// SendEmail, they cannot duplicate anything.
func (s *SES) checkRetries() func(*sesv2.Options) {
	return func(o *sesv2.Options) {
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = 5
			so.MaxBackoff = 5 * time.Second
			if s.opts.checkBackoff != nil {
				so.Backoff = s.opts.checkBackoff
			}
		})
	}
}

// identityState is SES's answer to GetEmailIdentity for one identity.
type identityState struct {
	name      string
	domain    bool
	missing   bool  // NotFoundException
	denied    error // AccessDenied: the error, naming the permissions
	verified  bool  // VerifiedForSendingStatus
	status    types.VerificationStatus
	errorType types.VerificationError
}

// usable says whether SES sends from the identity: verified for sending and, for a domain,
// its verification succeeded (or SES cannot check it right now; it keeps sending meanwhile).
func (st identityState) usable() bool {
	if st.missing || st.denied != nil || !st.verified {
		return false
	}
	if !st.domain {
		return true
	}
	switch st.status {
	case "", types.VerificationStatusSuccess, types.VerificationStatusTemporaryFailure:
		return true
	}
	return false
}

func (st identityState) errorTypeNote() string {
	if st.errorType == "" {
		return ""
	}
	return ", " + string(st.errorType)
}

// describe says what SES said about the identity, in a few words.
func (st identityState) describe() string {
	switch {
	case st.missing:
		return "SES has no such identity"
	case st.denied != nil:
		return "access denied"
	case st.status == types.VerificationStatusPending:
		if st.domain {
			return "pending verification (SES has not found its DNS records yet)"
		}
		return "pending verification (the link SES mailed to the address was not followed yet)"
	case st.status == types.VerificationStatusFailed:
		if st.errorType != "" {
			return "verification failed (" + string(st.errorType) + ")"
		}
		return "verification failed"
	case st.status == types.VerificationStatusNotStarted:
		return "verification not started"
	case st.status == types.VerificationStatusTemporaryFailure:
		return "SES cannot currently check its DNS records (TEMPORARY_FAILURE" + st.errorTypeNote() + ")"
	case !st.verified:
		return "not verified for sending (VerificationStatus " + orDefault(string(st.status), "not reported") + ")"
	}
	return "verification status " + string(st.status)
}

// describeIdentities says what SES said about each identity asked about for an address: the
// address and its own domain always, parent domains only when SES has them.
func describeIdentities(found []identityState, domain string) string {
	var parts []string
	for _, st := range found {
		if st.missing && st.domain && st.name != domain {
			continue
		}
		parts = append(parts, st.name+": "+st.describe())
	}
	return strings.Join(parts, "; ")
}

// identity asks SES about one identity; SES having no such identity is an answer, not an error.
func (s *SES) identity(ctx context.Context, name string) (identityState, error) {
	st := identityState{name: name, domain: !strings.Contains(name, "@")}
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	out, err := s.client.GetEmailIdentity(ctx, &sesv2.GetEmailIdentityInput{EmailIdentity: aws.String(name)}, s.checkRetries())
	var notFound *types.NotFoundException
	var denied *accessDenied
	switch {
	case errors.As(err, &notFound):
		st.missing = true
		return st, nil
	case err != nil:
		if err = checkCallError("GetEmailIdentity", name, err); errors.As(err, &denied) {
			st.denied = err // a policy may allow the domain's ARN and not the address's
			return st, nil
		}
		return st, err
	}
	st.verified, st.status = out.VerifiedForSendingStatus, out.VerificationStatus
	if out.IdentityType != "" {
		st.domain = out.IdentityType != types.IdentityTypeEmailAddress
	}
	if out.VerificationInfo != nil {
		st.errorType = out.VerificationInfo.ErrorType
	}
	return st, nil
}

// sesIdentityNames is an address as SES identities name it, and its domain: the domain in
// lower case, an internationalized one in Punycode (ASCII).
func sesIdentityNames(addr string) (bare, domain string, err error) {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return "", "", errors.New("not an address with a domain")
	}
	local, domain := addr[:at], strings.ToLower(addr[at+1:])
	if !isASCII(domain) {
		if domain, err = idna.Lookup.ToASCII(domain); err != nil {
			return "", "", errors.New("its domain is not a valid internationalized domain name")
		}
	}
	return local + "@" + domain, domain, nil
}

// parentDomains is domain and the domains above it that can be SES identities: "a.b.example"
// gives a.b.example and b.example (not the top-level domain).
func parentDomains(domain string) []string {
	var out []string
	for strings.Contains(domain, ".") {
		out = append(out, domain)
		_, domain, _ = strings.Cut(domain, ".")
	}
	return out
}

// iamPermissions is what the daemon's AWS identity needs to be allowed to do with SES.
const iamPermissions = "ses:GetAccount and ses:GetEmailIdentity (for the start-up check), besides ses:SendEmail"

// checkCallError describes a failed GetAccount or GetEmailIdentity call the way Send's errors
// read: SES's own words, not the SDK's boilerplate.
func checkCallError(op, identity string, err error) error {
	what := "SES " + op
	if identity != "" {
		what += " " + identity
	}
	var respErr *awshttp.ResponseError
	if !errors.As(err, &respErr) {
		return fmt.Errorf("%s: %w", what, err) // no answer: transport, timeout, credentials
	}
	status := respErr.HTTPStatusCode()
	var apiErr smithy.APIError
	isAPI := errors.As(err, &apiErr)
	if isAPI && apiErr.ErrorCode() == "UnknownOperationException" || !isAPI && status == http.StatusNotFound {
		return &unsupported{fmt.Sprintf("%s: the endpoint answered %d without an SES answer: it does not implement %s (an SES emulator at mailer.ses.endpoint?)",
			what, status, op)}
	}
	if !isAPI {
		return fmt.Errorf("%s: the endpoint answered %d without an SES error: %w", what, status, err)
	}
	answer := sesAnswer{status: status, msg: apiErr.ErrorMessage(), err: err}
	switch apiErr.ErrorCode() {
	case "AccessDeniedException", "AccessDenied":
		return &accessDenied{fmt.Errorf("%s: access denied (%w): allow the daemon's AWS identity (IAM user or role) %s", what, answer, iamPermissions)}
	}
	return fmt.Errorf("%s (%s): %w", what, apiErr.ErrorCode(), answer)
}

// accessDenied is an AccessDenied answer to a check's call.
type accessDenied struct{ error }

func (e *accessDenied) Unwrap() error { return e.error }
