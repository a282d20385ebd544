package fakeses

import (
	"net/http"
	"net/http/httptest"
)

// URL is the address Start returned.
func (s *Server) URL() string {
	if s.httpSrv == nil {
		return ""
	}
	return s.httpSrv.URL
}

// Record handles a SendEmail request as SES would, keeping the message when it is valid, but
// writes no answer: Intercept can then drop the connection, hang or answer garbage, so the
// client cannot know the message was accepted. It reports whether the message was accepted.
func (s *Server) Record(r *http.Request) bool {
	rec := httptest.NewRecorder()
	s.sendEmail(rec, r)
	return rec.Code == http.StatusOK
}
