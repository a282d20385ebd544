package fakeses

import (
	"net/http"
	"net/mail"
	"strings"
)

// IdentityStatus is what the fake says about one email identity (an address or a domain), as
// GetEmailIdentity reports it and as SendEmail applies it.
type IdentityStatus int

const (
	// IdentityVerified: VerificationStatus SUCCESS, VerifiedForSendingStatus true.
	IdentityVerified IdentityStatus = iota
	// IdentityPending: the identity exists, SES has not verified it yet (VerificationStatus
	// PENDING, VerifiedForSendingStatus false).
	IdentityPending
	// IdentityFailed: verification failed (VerificationStatus FAILED, VerifiedForSendingStatus
	// false; a domain's VerificationInfo says HOST_NOT_FOUND).
	IdentityFailed
	// IdentityTemporaryFailure: a verified identity whose DNS records SES cannot check at the
	// moment (VerificationStatus TEMPORARY_FAILURE); SES still sends from it.
	IdentityTemporaryFailure
	// IdentityNotStarted: the identity exists but its verification has not started
	// (VerificationStatus NOT_STARTED, VerifiedForSendingStatus false).
	IdentityNotStarted
	// IdentityMissing: the account has no such identity; GetEmailIdentity answers 404
	// NotFoundException.
	IdentityMissing
)

// SetIdentity sets what SES says about identity: an email address ("no-reply@acme.example")
// or a domain ("acme.example"); names are matched case-insensitively. Identities never set
// have the default status, IdentityVerified unless SetDefaultIdentityStatus changed it.
//
// As in SES, a From address can be sent from when the address itself or its domain, or a
// parent domain, is verified for sending; in the sandbox (SetSandbox) the same holds for
// every recipient. Otherwise SendEmail answers 400 MessageRejected "Email address is not
// verified. ...".
func (s *Server) SetIdentity(identity string, st IdentityStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.identities == nil {
		s.identities = map[string]IdentityStatus{}
	}
	s.identities[strings.ToLower(identity)] = st
}

// SetDefaultIdentityStatus sets the status of every identity not named with SetIdentity.
// IdentityMissing makes the fake a fresh account, where only the identities set exist.
func (s *Server) SetDefaultIdentityStatus(st IdentityStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.defaultIdentity = st
}

// SetSandbox puts the account in the SES sandbox (GetAccount ProductionAccessEnabled false):
// SendEmail then also refuses recipients that are not verified identities (addresses of the
// mailbox simulator, @simulator.amazonses.com, excepted), as SES does.
func (s *Server) SetSandbox(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sandbox = on
}

// SetSendingEnabled pauses (false) or resumes sending for the account: GetAccount reports
// SendingEnabled, and while it is false SendEmail answers 400 SendingPausedException.
func (s *Server) SetSendingEnabled(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sendingPaused = !on
}

// IdentityLookups returns the identities GetEmailIdentity was asked about, in order.
func (s *Server) IdentityLookups() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lookups...)
}

// identityStatus is the status of identity; s.mu is held.
func (s *Server) identityStatus(identity string) IdentityStatus {
	if st, ok := s.identities[strings.ToLower(identity)]; ok {
		return st
	}
	return s.defaultIdentity
}

// restricted reports whether SendEmail has anything to check beyond the request itself: the
// default fake accepts every sender and recipient, and the lean path stays lean.
func (s *Server) restricted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sandbox || s.sendingPaused || s.defaultIdentity != IdentityVerified || len(s.identities) > 0
}

// refuse answers a SendEmail request the way SES does when the account cannot send it: sending
// paused, or a sender (or, in the sandbox, a recipient) that is not verified. It reports
// whether it wrote an answer.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, from string, recipients []string) bool {
	if !s.restricted() {
		return false
	}
	from = bareAddress(from)
	s.mu.Lock()
	paused, sandbox := s.sendingPaused, s.sandbox
	var failed []string
	if !s.canSendAs(from) {
		failed = append(failed, from)
	}
	if sandbox {
		for _, to := range recipients {
			to = bareAddress(to)
			if !strings.HasSuffix(strings.ToLower(to), "@simulator.amazonses.com") && !s.canSendAs(to) {
				failed = append(failed, to)
			}
		}
	}
	s.mu.Unlock()
	switch {
	case paused:
		WriteError(w, http.StatusBadRequest, "SendingPausedException", "Sending is paused for this account.")
		return true
	case len(failed) > 0:
		WriteError(w, http.StatusBadRequest, "MessageRejected", "Email address is not verified. The following identities failed the check in region "+
			strings.ToUpper(requestRegion(r))+": "+strings.Join(failed, ", "))
		return true
	}
	return false
}

// canSendAs reports whether addr, or its domain or a parent domain, is an identity verified for
// sending; s.mu is held.
func (s *Server) canSendAs(addr string) bool {
	if s.identityStatus(addr).verifiedForSending() {
		return true
	}
	_, domain, ok := strings.Cut(addr, "@")
	for ok && strings.Contains(domain, ".") {
		if s.identityStatus(domain).verifiedForSending() {
			return true
		}
		_, domain, ok = strings.Cut(domain, ".")
	}
	return false
}

func (st IdentityStatus) verifiedForSending() bool {
	return st == IdentityVerified || st == IdentityTemporaryFailure
}

// bareAddress is the address of a header value ("Acme <a@b.example>" → "a@b.example"); a value
// that does not parse is kept as it is.
func bareAddress(s string) string {
	if a, err := mail.ParseAddress(s); err == nil {
		return a.Address
	}
	return s
}

// requestRegion is the region of a SigV4 request's credential scope
// ("Credential=AKID/20260101/eu-west-1/ses/aws4_request"); us-east-1 when there is none.
func requestRegion(r *http.Request) string {
	_, cred, ok := strings.Cut(r.Header.Get("Authorization"), "Credential=")
	if parts := strings.Split(cred, "/"); ok && len(parts) >= 4 && parts[2] != "" {
		return parts[2]
	}
	return "us-east-1"
}

// getEmailIdentity answers GET /v2/email/identities/{EmailIdentity} with the fields of SES v2's
// GetEmailIdentity that describe verification.
func (s *Server) getEmailIdentity(w http.ResponseWriter, identity string) {
	s.mu.Lock()
	s.lookups = append(s.lookups, identity)
	st := s.identityStatus(identity)
	s.mu.Unlock()
	if st == IdentityMissing {
		WriteError(w, http.StatusNotFound, "NotFoundException", "Email identity "+identity+" does not exist.")
		return
	}
	domain := !strings.Contains(identity, "@")
	status := map[IdentityStatus]string{
		IdentityVerified: "SUCCESS", IdentityPending: "PENDING", IdentityFailed: "FAILED",
		IdentityTemporaryFailure: "TEMPORARY_FAILURE", IdentityNotStarted: "NOT_STARTED",
	}[st]
	out := map[string]any{
		"IdentityType":             "EMAIL_ADDRESS",
		"FeedbackForwardingStatus": true,
		"VerifiedForSendingStatus": st.verifiedForSending(),
		"VerificationStatus":       status,
		"DkimAttributes":           map[string]any{"SigningEnabled": false, "Status": "NOT_STARTED", "SigningAttributesOrigin": "AWS_SES"},
		"Policies":                 map[string]string{},
		"Tags":                     []any{},
	}
	if domain {
		out["IdentityType"] = "DOMAIN"
		out["DkimAttributes"] = map[string]any{
			"SigningEnabled": true, "Status": status, "SigningAttributesOrigin": "AWS_SES",
			"Tokens":                  []string{"fake1token", "fake2token", "fake3token"},
			"CurrentSigningKeyLength": "RSA_2048_BIT", "NextSigningKeyLength": "RSA_2048_BIT",
		}
		info := map[string]any{"LastCheckedTimestamp": 1.7e9}
		switch st {
		case IdentityVerified, IdentityTemporaryFailure:
			info["LastSuccessTimestamp"] = 1.7e9
		}
		switch st {
		case IdentityFailed:
			info["ErrorType"] = "HOST_NOT_FOUND"
		case IdentityTemporaryFailure:
			info["ErrorType"] = "DNS_SERVER_ERROR"
		}
		out["VerificationInfo"] = info
	}
	writeJSON(w, http.StatusOK, out)
}
