// Package fakeworkos is an in-memory WorkOS API that speaks the real wire format for the parts
// workos-emailer uses: the Events API and the Get endpoints of User Management. It backs the
// demo and the tests; Intercept lets a test inject faults.
package fakeworkos

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Server is a fake WorkOS API. Use New, then Start or Handler.
type Server struct {
	APIKey string
	// Intercept, when set, sees every request first; returning true means it wrote the answer.
	Intercept func(w http.ResponseWriter, r *http.Request) bool
	// Now is the clock used for created_at; defaults to time.Now.
	Now func() time.Time

	mu      sync.Mutex
	seq     int
	events  []event
	objects map[string]map[string]any // id -> full object, secrets included
	// encoded caches objects' JSON, so a load test measures its client rather than the fake;
	// Update forgets an object's entry.
	encoded  map[string][]byte
	requests map[string]int
	sessions []Session
	httpSrv  *httptest.Server
}

type event struct {
	ID        string
	Type      string
	CreatedAt time.Time
	Data      json.RawMessage
	encoded   json.RawMessage // the event as listed
}

// Secret fields the Get endpoints return and events leave out.
var secretFields = []string{"token", "accept_invitation_url", "code", "password_reset_token", "password_reset_url"}

// New returns an empty fake that accepts apiKey.
func New(apiKey string) *Server {
	return &Server{APIKey: apiKey, Now: time.Now, objects: map[string]map[string]any{}, encoded: map[string][]byte{}, requests: map[string]int{}}
}

// Start serves on a loopback port; Close stops it.
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

// id returns a new sortable identifier with a WorkOS-style prefix.
func (s *Server) id(prefix string) string {
	s.seq++
	return fmt.Sprintf("%s_01%024d", prefix, s.seq)
}

func ts(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// Invitation describes an invitation to add.
type Invitation struct {
	Email          string
	State          string // default pending
	ExpiresAt      time.Time
	OrganizationID string
	InviterUserID  string
	RoleSlug       string // default "member" with an organization; always null without one
}

// AddInvitation creates an invitation and its invitation.created event. It returns the event
// id, the invitation id and its token.
func (s *Server) AddInvitation(inv Invitation) (eventID, objectID, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.Now()
	if inv.State == "" {
		inv.State = "pending"
	}
	if inv.OrganizationID == "" {
		inv.RoleSlug = ""
	} else if inv.RoleSlug == "" {
		inv.RoleSlug = "member"
	}
	objectID = s.id("invitation")
	token = "tok" + strings.ToUpper(objectID[len(objectID)-12:]) + "inv"
	obj := map[string]any{
		"object": "invitation", "id": objectID, "email": inv.Email, "state": inv.State,
		"accepted_at": nil, "revoked_at": nil, "expires_at": ts(inv.ExpiresAt),
		"organization_id": nilIfEmpty(inv.OrganizationID), "inviter_user_id": nilIfEmpty(inv.InviterUserID),
		"accepted_user_id": nil, "role_slug": nilIfEmpty(inv.RoleSlug), "created_at": ts(now), "updated_at": ts(now),
		"token":                 token,
		"accept_invitation_url": "https://auth.example.com/invite?invitation_token=" + token,
	}
	switch inv.State {
	case "revoked":
		obj["revoked_at"] = ts(now)
	case "accepted":
		obj["accepted_at"] = ts(now)
	}
	s.objects[objectID] = obj
	return s.addEvent("invitation.created", objectID, now), objectID, token
}

// AddCode creates a magic_auth or email_verification object with a code and its created event.
func (s *Server) AddCode(kind, email, userID string, expiresAt time.Time) (eventID, objectID, code string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.Now()
	objectID = s.id(kind)
	code = fmt.Sprintf("%06d", (s.seq*7919+104729)%1000000)
	s.objects[objectID] = map[string]any{
		"object": kind, "id": objectID, "user_id": userID, "email": email,
		"expires_at": ts(expiresAt), "created_at": ts(now), "updated_at": ts(now), "code": code,
	}
	return s.addEvent(kind+".created", objectID, now), objectID, code
}

// AddPasswordReset creates a password reset and its password_reset.created event.
func (s *Server) AddPasswordReset(email, userID string, expiresAt time.Time) (eventID, objectID, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.Now()
	objectID = s.id("password_reset")
	token = "tok" + strings.ToUpper(objectID[len(objectID)-12:]) + "pwr"
	s.objects[objectID] = map[string]any{
		"object": "password_reset", "id": objectID, "user_id": userID, "email": email,
		"expires_at": ts(expiresAt), "created_at": ts(now),
		"password_reset_token": token,
		"password_reset_url":   "https://auth.example.com/reset-password?token=" + token,
	}
	return s.addEvent("password_reset.created", objectID, now), objectID, token
}

// ResendInvitation refreshes an invitation's expiry, as WorkOS's Resend does, and adds the
// invitation.resent event; WorkOS answers a resend of an invitation that is not pending with
// an error, so a test that wants such an event makes it with Update first and then this.
func (s *Server) ResendInvitation(invitationID string, expiresAt time.Time) (eventID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.Now()
	inv := s.objects[invitationID]
	inv["expires_at"], inv["updated_at"] = ts(expiresAt), ts(now)
	delete(s.encoded, invitationID)
	return s.addEvent("invitation.resent", invitationID, now)
}

// AddRadarChallenge creates a Radar email challenge for a user's sign-in and its
// radar.challenge_created event (shapes: testdata/workos-spec-v0.61-excerpts.yaml).
func (s *Server) AddRadarChallenge(email, userID string, expiresAt time.Time) (eventID, objectID, code string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.Now()
	objectID = s.id("radar_challenge")
	code = fmt.Sprintf("%06d", (s.seq*7907+15485863)%1000000)
	s.objects[objectID] = map[string]any{"object": "radar_challenge", "id": objectID, "type": "email", "user_id": userID,
		"email": email, "expires_at": ts(expiresAt), "created_at": ts(now), "updated_at": ts(now), "code": code}
	data, _ := json.Marshal(map[string]any{"type": "email", "radar_challenge_id": objectID, "user_id": userID, "email": email})
	return s.appendEvent("radar.challenge_created", data, now), objectID, code
}

// AddOrganization adds an organization for Get Organization.
func (s *Server) AddOrganization(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.id("org")
	now := ts(s.Now())
	s.objects[id] = map[string]any{"object": "organization", "id": id, "name": name,
		"allow_profiles_outside_organization": false, "domains": []any{}, "metadata": map[string]any{},
		"external_id": nil, "created_at": now, "updated_at": now}
	return id
}

// AddUser adds a user for Get User.
func (s *Server) AddUser(first, last, email string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.id("user")
	now := ts(s.Now())
	s.objects[id] = map[string]any{"object": "user", "id": id, "email": email, "first_name": first,
		"last_name": last, "email_verified": true, "profile_picture_url": nil, "external_id": nil,
		"metadata": map[string]any{}, "last_sign_in_at": nil, "locale": nil, "created_at": now, "updated_at": now}
	return id
}

// SignUp creates a user and its user.created event; verified says whether the address was
// verified at sign-up (an SSO or social sign-up). metadata may name a locale.
func (s *Server) SignUp(first, last, email string, verified bool, metadata map[string]string) (eventID, userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.Now()
	userID = s.id("user")
	md := map[string]any{}
	for k, v := range metadata {
		md[k] = v
	}
	s.objects[userID] = map[string]any{"object": "user", "id": userID, "email": email, "first_name": first,
		"last_name": last, "email_verified": verified, "profile_picture_url": nil, "external_id": nil,
		"metadata": md, "last_sign_in_at": nil, "locale": nil, "created_at": ts(now), "updated_at": ts(now)}
	return s.addEvent("user.created", userID, now), userID
}

// VerifyEmail marks a user's address verified and adds the
// authentication.email_verification_succeeded event WorkOS sends then.
func (s *Server) VerifyEmail(userID string) (eventID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.Now()
	u := s.objects[userID]
	u["email_verified"] = true
	u["updated_at"] = ts(now)
	delete(s.encoded, userID)
	data, _ := json.Marshal(map[string]any{"type": "email_verification", "status": "succeeded", "user_id": userID,
		"email": u["email"], "ip_address": "192.0.2.1", "user_agent": "Mozilla/5.0"})
	return s.appendEvent("authentication.email_verification_succeeded", data, now)
}

// ChangePassword adds the password_reset.succeeded event of a completed password reset.
func (s *Server) ChangePassword(userID string) (eventID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.Now()
	u := s.objects[userID]
	data, _ := json.Marshal(map[string]any{"object": "password_reset", "id": s.id("password_reset"), "user_id": userID,
		"email": u["email"], "expires_at": ts(now.Add(time.Hour)), "created_at": ts(now.Add(-time.Minute))})
	return s.appendEvent("password_reset.succeeded", data, now)
}

func (s *Server) appendEvent(typ string, data json.RawMessage, now time.Time) string {
	id := s.id("event")
	e := event{ID: id, Type: typ, CreatedAt: now, Data: data}
	e.encoded = eventJSON(e)
	s.events = append(s.events, e)
	return id
}

// AddRawEvent appends an event with the given type and data as is.
func (s *Server) AddRawEvent(typ string, data json.RawMessage) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.appendEvent(typ, data, s.Now())
}

// Update changes fields of a stored object (e.g. an invitation's state), or deletes it when
// fields is nil.
func (s *Server) Update(objectID string, fields map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.encoded, objectID)
	if fields == nil {
		delete(s.objects, objectID)
		return
	}
	for k, v := range fields {
		s.objects[objectID][k] = v
	}
}

// Requests returns how many requests reached path prefix p (e.g. "/events").
func (s *Server) Requests(p string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, v := range s.requests {
		if strings.HasPrefix(k, p) {
			n += v
		}
	}
	return n
}

// EventIDs lists every event id in stream order.
func (s *Server) EventIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.events))
	for i, e := range s.events {
		out[i] = e.ID
	}
	return out
}

// addEvent appends an event whose data is a snapshot of the object without its secrets, as
// WorkOS does: later changes to the object do not change the event.
func (s *Server) addEvent(typ, objectID string, now time.Time) string {
	snapshot := map[string]any{}
	for k, v := range s.objects[objectID] {
		snapshot[k] = v
	}
	for _, f := range secretFields {
		delete(snapshot, f)
	}
	data, _ := json.Marshal(snapshot)
	return s.appendEvent(typ, data, now)
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// ServeHTTP implements the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests[r.URL.Path]++
	intercept := s.Intercept
	s.mu.Unlock()
	if intercept != nil && intercept(w, r) {
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+s.APIKey {
		WriteError(w, http.StatusUnauthorized, "", "Unauthorized")
		return
	}
	if r.Method == http.MethodPost && r.URL.Path == "/passwordless/sessions" {
		s.createSession(w, r)
		return
	}
	if r.Method != http.MethodGet {
		WriteError(w, http.StatusMethodNotAllowed, "", "Method not allowed")
		return
	}
	path := r.URL.Path
	if path == "/events" {
		s.listEvents(w, r)
		return
	}
	for prefix, object := range map[string]string{
		"/user_management/invitations/":        "invitation",
		"/user_management/magic_auth/":         "magic_auth",
		"/user_management/email_verification/": "email_verification",
		"/user_management/password_reset/":     "password_reset",
		"/user_management/radar_challenges/":   "radar_challenge",
		"/user_management/users/":              "user",
		"/organizations/":                      "organization",
	} {
		if id, ok := strings.CutPrefix(path, prefix); ok && id != "" && !strings.Contains(id, "/") {
			s.get(w, object, id)
			return
		}
	}
	WriteError(w, http.StatusNotFound, "", "Not found")
}

// Session is a Passwordless Session the fake created (Magic Link), secrets included.
type Session struct {
	ID, Email, RedirectURI, State, Link string
	ExpiresAt                           time.Time
}

// Sessions returns the Passwordless Sessions created so far, oldest first.
func (s *Server) Sessions() []Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Session(nil), s.sessions...)
}

// createSession is POST /passwordless/sessions in workos-go's wire shape: a Magic Link valid for
// 15 minutes.
func (s *Server) createSession(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Email       string `json:"email"`
		Type        string `json:"type"`
		RedirectURI string `json:"redirect_uri"`
		State       string `json:"state"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
		WriteError(w, http.StatusBadRequest, "invalid_request", "The request body is not JSON.")
		return
	}
	if req.Email == "" || !strings.Contains(req.Email, "@") || req.Type != "MagicLink" {
		WriteError(w, http.StatusUnprocessableEntity, "invalid_request_parameters", "email and type MagicLink are required.")
		return
	}
	s.mu.Lock()
	now := s.Now()
	sess := Session{ID: s.id("passwordless_session"), Email: req.Email, RedirectURI: req.RedirectURI, State: req.State,
		ExpiresAt: now.Add(15 * time.Minute)}
	sess.Link = "https://auth.workos.com/passwordless/tok" + strings.ToUpper(sess.ID[len(sess.ID)-12:]) + "mlk/confirm"
	s.sessions = append(s.sessions, sess)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]any{"object": "passwordless_session", "id": sess.ID, "email": sess.Email,
		"expires_at": ts(sess.ExpiresAt), "link": sess.Link})
}

func (s *Server) get(w http.ResponseWriter, object, id string) {
	s.mu.Lock()
	obj, ok := s.objects[id]
	var body []byte
	if ok && obj["object"] == object {
		if body = s.encoded[id]; body == nil {
			body, _ = json.Marshal(obj)
			s.encoded[id] = body
		}
	}
	s.mu.Unlock()
	if body == nil {
		WriteError(w, http.StatusNotFound, "entity_not_found", fmt.Sprintf("%s not found: '%s'.", object, id))
		return
	}
	writeJSON(w, http.StatusOK, body)
}

func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 10
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			writeValidationError(w, "limit", "limit must be an integer between 1 and 100")
			return
		}
		limit = n
	}
	// The spec declares events as a form array without explode (events=a,b); workos-go sends
	// the parameter once per type (events=a&events=b). WorkOS takes both.
	types := map[string]bool{}
	for _, v := range q["events"] {
		for _, t := range strings.Split(v, ",") {
			if t != "" {
				types[t] = true
			}
		}
	}
	var since time.Time
	if v := q.Get("range_start"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			writeValidationError(w, "range_start", "range_start must be an ISO-8601 date")
			return
		}
		since = t
	}

	// The spec's default order is descending (newest first), so a client that wants the
	// stream oldest-first, as a cursor needs, must ask for it; the fake holds it to that.
	order := q.Get("order")
	switch order {
	case "", "asc", "desc", "normal":
	default:
		writeValidationError(w, "order", "order must be one of asc, desc, normal")
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	stream := s.events
	if order != "asc" {
		// desc and normal differ only in what before/after mean; after is all the fake serves.
		stream = slices.Clone(s.events)
		slices.Reverse(stream)
	}
	start := 0
	if after := q.Get("after"); after != "" {
		// Event ids sort in creation order.
		i := sort.Search(len(s.events), func(i int) bool { return s.events[i].ID >= after })
		if i == len(s.events) || s.events[i].ID != after {
			WriteError(w, http.StatusBadRequest, "invalid_cursor", "The 'after' cursor does not refer to a known event.")
			return
		}
		start = i + 1
		if order != "asc" {
			start = len(s.events) - i
		}
	}
	data := []json.RawMessage{}
	for _, e := range stream[start:] {
		if len(data) == limit {
			break
		}
		if len(types) > 0 && !types[e.Type] || e.CreatedAt.Before(since) {
			continue
		}
		data = append(data, e.encoded)
	}
	var after any
	if len(data) == limit {
		var last struct{ ID string }
		_ = json.Unmarshal(data[len(data)-1], &last)
		after = last.ID
	}
	body, _ := json.Marshal(map[string]any{"object": "list", "data": data, "list_metadata": map[string]any{"after": after}})
	writeJSON(w, http.StatusOK, body)
}

func eventJSON(e event) json.RawMessage {
	b, _ := json.Marshal(map[string]any{
		"object": "event", "id": e.ID, "event": e.Type, "data": e.Data,
		"created_at": ts(e.CreatedAt), "context": map[string]any{},
	})
	return b
}

// WriteError writes a WorkOS-style JSON error.
func WriteError(w http.ResponseWriter, status int, code, message string) {
	body := map[string]any{"message": message}
	if code != "" {
		body["code"] = code
	}
	b, _ := json.Marshal(body)
	writeJSON(w, status, b)
}

// writeValidationError writes the 422 WorkOS answers to invalid parameters: a message and the
// list of the fields that failed. The per-field codes are the fake's own.
func writeValidationError(w http.ResponseWriter, field, message string) {
	b, _ := json.Marshal(map[string]any{
		"code": "invalid_request_parameters", "message": message,
		"errors": []any{map[string]any{"field": field, "code": "invalid_" + field}},
	})
	writeJSON(w, http.StatusUnprocessableEntity, b)
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Request-ID", "req_fake")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
