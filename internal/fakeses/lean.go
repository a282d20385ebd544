package fakeses

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// Accept handles a SendEmail request the way ServeHTTP does (same checks, same answers) but
// keeps no copy of the message, so a load test can send more mail than memory should hold.
// Call it from Intercept. accepted, when not nil, sees each accepted message, without its
// bodies, after it is accepted and before the answer is written. It reports whether the
// message was accepted.
func (s *Server) Accept(w http.ResponseWriter, r *http.Request, accepted func(Message)) bool {
	if r.Header.Get("Authorization") == "" {
		WriteError(w, http.StatusForbidden, "MissingAuthenticationTokenException", "Missing Authentication Token")
		return false
	}
	var in sendEmailInput
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		WriteError(w, http.StatusBadRequest, "BadRequestException", "Could not parse request body")
		return false
	}
	if in.FromEmailAddress == "" || len(in.Destination.ToAddresses) == 0 || in.Content.Simple == nil {
		WriteError(w, http.StatusBadRequest, "BadRequestException", "Missing required field")
		return false
	}
	s.mu.Lock()
	n := s.requests // ServeHTTP counted this request before Intercept: unique per request
	s.mu.Unlock()
	m := Message{
		MessageID: fmt.Sprintf("0100018f-lean-%09d-000000", n),
		From:      in.FromEmailAddress, To: in.Destination.ToAddresses, ReplyTo: in.ReplyToAddresses,
		Subject: in.Content.Simple.Subject.Data, ConfigurationSet: in.ConfigurationSetName,
		Tags: make(map[string]string, len(in.EmailTags)),
	}
	for _, t := range in.EmailTags {
		m.Tags[t.Name] = t.Value
	}
	if accepted != nil {
		accepted(m)
	}
	writeJSON(w, http.StatusOK, map[string]any{"MessageId": m.MessageID})
	return true
}
