// Package fakeses is an in-memory Amazon SES v2 endpoint that speaks the REST-JSON wire format
// of SendEmail, GetAccount and GetEmailIdentity, including real error shapes (X-Amzn-ErrorType).
// Tests use it through the real aws-sdk-go-v2 client; Intercept injects faults. By default every
// identity is verified and the account has production access; SetIdentity, SetSandbox and
// SetSendingEnabled (identities.go) make it refuse mail the way SES does.
package fakeses

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
)

// Message is what SES accepted.
type Message struct {
	MessageID        string
	From             string
	To               []string
	ReplyTo          []string
	Subject          string
	HTML             string
	Text             string
	ConfigurationSet string
	Tags             map[string]string
	// Headers are the message's own headers (Simple.Headers), by name; nil: none. Accept
	// does not read them.
	Headers map[string]string
}

// Server is a fake SES v2 endpoint.
type Server struct {
	// Intercept, when set, sees every request first; returning true means it wrote the answer.
	Intercept func(w http.ResponseWriter, r *http.Request) bool
	// BetweenHeadersAndBody, when set, splits a SendEmail success answer in two: the headers
	// are flushed, the hook runs, then the body follows. SES's answers can arrive that way; a
	// client must not take the gap for the end of the connection.
	BetweenHeadersAndBody func(r *http.Request)

	mu       sync.Mutex
	messages []Message
	requests int
	httpSrv  *httptest.Server

	// identities.go
	identities      map[string]IdentityStatus // by lower-case name
	defaultIdentity IdentityStatus
	sandbox         bool
	sendingPaused   bool
	lookups         []string
}

// New returns an empty fake.
func New() *Server { return &Server{} }

// Start serves on a loopback port and returns its URL.
func (s *Server) Start() string {
	s.httpSrv = httptest.NewServer(s)
	return s.httpSrv.URL
}

// Close stops a started server.
func (s *Server) Close() {
	if s.httpSrv != nil {
		s.httpSrv.Close()
	}
}

// Messages returns the accepted messages in order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// SendRequests counts SendEmail requests, accepted or not.
func (s *Server) SendRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

type content struct {
	Data    string `json:"Data"`
	Charset string `json:"Charset"`
}

type sendEmailInput struct {
	FromEmailAddress string
	ReplyToAddresses []string
	Destination      struct{ ToAddresses, CcAddresses, BccAddresses []string }
	Content          struct {
		Simple *struct {
			Subject content
			Body    struct{ Html, Text *content }
			Headers []struct{ Name, Value string }
		}
	}
	ConfigurationSetName string
	EmailTags            []struct{ Name, Value string }
}

// ServeHTTP implements the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.URL.Path == "/v2/email/outbound-emails" {
		s.mu.Lock()
		s.requests++
		s.mu.Unlock()
	}
	if s.Intercept != nil && s.Intercept(w, r) {
		return
	}
	if r.Header.Get("Authorization") == "" {
		WriteError(w, http.StatusForbidden, "MissingAuthenticationTokenException", "Missing Authentication Token")
		return
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v2/email/outbound-emails":
		s.sendEmail(w, r)
	case r.Method == http.MethodGet && r.URL.Path == "/v2/email/account":
		s.mu.Lock()
		sent, sandbox, paused := len(s.messages), s.sandbox, s.sendingPaused
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{
			"SendQuota":      map[string]any{"Max24HourSend": 50000.0, "MaxSendRate": 14.0, "SentLast24Hours": float64(sent)},
			"SendingEnabled": !paused, "ProductionAccessEnabled": !sandbox, "EnforcementStatus": "HEALTHY",
		})
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v2/email/identities/") &&
		len(r.URL.Path) > len("/v2/email/identities/") && !strings.Contains(r.URL.Path[len("/v2/email/identities/"):], "/"):
		s.getEmailIdentity(w, r.URL.Path[len("/v2/email/identities/"):])
	default:
		WriteError(w, http.StatusNotFound, "NotFoundException", "Unknown operation")
	}
}

func (s *Server) sendEmail(w http.ResponseWriter, r *http.Request) {
	var in sendEmailInput
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		WriteError(w, http.StatusBadRequest, "BadRequestException", "Could not parse request body")
		return
	}
	if in.FromEmailAddress == "" || len(in.Destination.ToAddresses) == 0 || in.Content.Simple == nil {
		WriteError(w, http.StatusBadRequest, "BadRequestException", "Missing required field")
		return
	}
	recipients := append(append(append([]string(nil), in.Destination.ToAddresses...), in.Destination.CcAddresses...), in.Destination.BccAddresses...)
	if s.refuse(w, r, in.FromEmailAddress, recipients) {
		return
	}
	m := Message{
		From: in.FromEmailAddress, To: in.Destination.ToAddresses, ReplyTo: in.ReplyToAddresses,
		Subject: in.Content.Simple.Subject.Data, ConfigurationSet: in.ConfigurationSetName, Tags: map[string]string{},
	}
	for _, h := range in.Content.Simple.Headers {
		if m.Headers == nil {
			m.Headers = map[string]string{}
		}
		m.Headers[h.Name] = h.Value
	}
	if b := in.Content.Simple.Body.Html; b != nil {
		m.HTML = b.Data
	}
	if b := in.Content.Simple.Body.Text; b != nil {
		m.Text = b.Data
	}
	for _, t := range in.EmailTags {
		m.Tags[t.Name] = t.Value
	}
	s.mu.Lock()
	m.MessageID = fmt.Sprintf("0100018f-fake-%06d-000000", len(s.messages)+1)
	s.messages = append(s.messages, m)
	s.mu.Unlock()
	if s.BetweenHeadersAndBody != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		s.BetweenHeadersAndBody(r)
		_ = json.NewEncoder(w).Encode(map[string]any{"MessageId": m.MessageID})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"MessageId": m.MessageID})
}

// WriteError writes an SES v2 error the way the service does: the error code in
// X-Amzn-ErrorType and a JSON body with a message.
func WriteError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("X-Amzn-ErrorType", code+":http://internal.amazon.com/coral/com.amazonaws.sesv2/")
	w.Header().Set("X-Amzn-RequestId", "00000000-0000-0000-0000-000000000000")
	writeJSON(w, status, map[string]any{"message": message})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
