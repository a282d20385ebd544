// Package fakesqs is an in-memory Amazon SQS queue speaking the JSON protocol the AWS SDK for Go
// v2 uses (POST /, X-Amz-Target: AmazonSQS.<Operation>, application/x-amz-json-1.0): SendMessage,
// ReceiveMessage with long polling and a visibility timeout, DeleteMessage and
// DeleteMessageBatch. Tests use it through the real sqs client; Fail injects an outage.
package fakesqs

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
)

// Server is one queue; every QueueUrl names it.
type Server struct {
	srv *httptest.Server
	// Visibility is how long a received message stays hidden unless deleted; default 30 s.
	Visibility time.Duration

	mu       sync.Mutex
	arrived  chan struct{} // closed and replaced when a message arrives
	messages []*message
	next     int
	deleted  int
	failing  int // answer this many requests with 500
}

type message struct {
	id, body, receipt string
	hiddenUntil       time.Time
	receives          int
}

// New starts nothing; Start serves.
func New() *Server { return &Server{arrived: make(chan struct{}), Visibility: 30 * time.Second} }

// Start serves on loopback and returns the endpoint URL.
func (s *Server) Start() string {
	s.srv = httptest.NewServer(s)
	return s.srv.URL
}

// Close stops serving.
func (s *Server) Close() { s.srv.Close() }

// QueueURL is a queue URL for this server.
func (s *Server) QueueURL() string { return s.srv.URL + "/123456789012/ses-feedback" }

// Send queues a message body as SNS or EventBridge would.
func (s *Server) Send(body string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	m := &message{id: fmt.Sprintf("00000000-0000-4000-8000-%012d", s.next), body: body}
	s.messages = append(s.messages, m)
	close(s.arrived)
	s.arrived = make(chan struct{})
	return m.id
}

// Left is how many messages are still in the queue (received or not); Deleted how many were
// deleted.
func (s *Server) Left() (left, deleted int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.messages), s.deleted
}

// Fail answers the next n requests with 500 InternalError.
func (s *Server) Fail(n int) {
	s.mu.Lock()
	s.failing = n
	s.mu.Unlock()
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	op := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "AmazonSQS.")
	if r.Method != http.MethodPost || op == r.Header.Get("X-Amz-Target") {
		writeError(w, http.StatusBadRequest, "InvalidAction", "not an SQS JSON request")
		return
	}
	s.mu.Lock()
	if s.failing > 0 {
		s.failing--
		s.mu.Unlock()
		writeError(w, http.StatusInternalServerError, "InternalError", "injected")
		return
	}
	s.mu.Unlock()
	var in struct {
		QueueURL            string `json:"QueueUrl"`
		MessageBody         string
		MaxNumberOfMessages int
		WaitTimeSeconds     int
		VisibilityTimeout   *int
		ReceiptHandle       string
		Entries             []struct{ Id, ReceiptHandle string }
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.QueueURL == "" {
		writeError(w, http.StatusBadRequest, "InvalidParameterValue", "unreadable request or no QueueUrl")
		return
	}
	switch op {
	case "SendMessage":
		id := s.Send(in.MessageBody)
		writeJSON(w, map[string]string{"MessageId": id, "MD5OfMessageBody": md5Hex(in.MessageBody)})
	case "ReceiveMessage":
		s.receive(w, r, in.MaxNumberOfMessages, in.WaitTimeSeconds, in.VisibilityTimeout)
	case "DeleteMessage":
		if !s.delete(in.ReceiptHandle) {
			writeError(w, http.StatusBadRequest, "ReceiptHandleIsInvalid", "The input receipt handle is invalid.")
			return
		}
		writeJSON(w, struct{}{})
	case "DeleteMessageBatch":
		type entry struct{ Id string }
		ok, failed := []entry{}, []map[string]any{}
		for _, e := range in.Entries {
			if s.delete(e.ReceiptHandle) {
				ok = append(ok, entry{e.Id})
			} else {
				failed = append(failed, map[string]any{"Id": e.Id, "Code": "ReceiptHandleIsInvalid", "SenderFault": true})
			}
		}
		writeJSON(w, map[string]any{"Successful": ok, "Failed": failed})
	default:
		writeError(w, http.StatusBadRequest, "InvalidAction", "operation "+op+" is not implemented by the fake")
	}
}

func (s *Server) receive(w http.ResponseWriter, r *http.Request, max, wait int, visibility *int) {
	if max <= 0 {
		max = 1
	}
	hide := s.Visibility
	if visibility != nil {
		hide = time.Duration(*visibility) * time.Second
	}
	deadline := time.Now().Add(time.Duration(wait) * time.Second)
	for {
		s.mu.Lock()
		now := time.Now()
		var out []map[string]string
		for _, m := range s.messages {
			if len(out) == max || now.Before(m.hiddenUntil) {
				continue
			}
			m.receives++
			m.hiddenUntil = now.Add(hide)
			m.receipt = fmt.Sprintf("%s#%d", m.id, m.receives)
			out = append(out, map[string]string{"MessageId": m.id, "ReceiptHandle": m.receipt, "Body": m.body,
				"MD5OfBody": md5Hex(m.body)})
		}
		arrived := s.arrived
		s.mu.Unlock()
		if len(out) > 0 || !now.Before(deadline) {
			writeJSON(w, map[string]any{"Messages": out})
			return
		}
		t := time.NewTimer(min(time.Until(deadline), 100*time.Millisecond)) // also wakes for messages turning visible
		select {
		case <-arrived:
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
		t.Stop()
	}
}

func (s *Server) delete(receipt string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, m := range s.messages {
		if m.receipt == receipt && receipt != "" {
			s.messages = append(s.messages[:i], s.messages[i+1:]...)
			s.deleted++
			return true
		}
	}
	return false
}

func md5Hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers as SQS's JSON protocol does: the type in __type and in x-amzn-query-error.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.Header().Set("x-amzn-query-error", "AWS.SimpleQueueService."+code+";Sender")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": "com.amazonaws.sqs#" + code, "message": msg})
}
