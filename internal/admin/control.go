package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/worker"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

// The control socket: a unix socket beside the store (mode 0600), through which the CLI reaches
// the daemon that holds that store, whatever admin.listen is. It serves what the admin listener
// serves to read (GET /status, /dead) and the changes an operator makes while the daemon runs:
//
//	POST /dead/retry    {"event_ids": [...]} or {"all": true}  -> RetryAnswer
//	POST /cursor/set    {"event_id": "event_..."}              -> CursorAnswer
//	POST /cursor/reset  {"since": "RFC 3339"}                   -> CursorAnswer
//
// A refusal (the operator's input is wrong: nothing changed) is 422 with {"error": "..."}; a
// failure is 500 or 503. Only the daemon's user (and root) can connect: the socket's mode is
// the authentication.

// ControlStore is what the control socket changes in the store; *store.Store has it.
type ControlStore interface {
	Store
	Tracer
	Position() (store.Position, error)
	SetCursor(eventID string, now time.Time) error
	ResetCursor(since time.Time) error
	RequestRetry(now time.Time, ids ...string) ([]store.Delivery, error)
	RequestRetryAll(now time.Time) (queued, notRetryable []store.Delivery, err error)
}

// Interrupter runs a change between two terms of the event pipeline; *worker.Worker has it.
type Interrupter interface {
	Interrupt(ctx context.Context, change func() error) error
}

// Control is the control socket's configuration.
type Control struct {
	Store  ControlStore
	Worker Interrupter
	// Retention and RetentionText (as the operator wrote it) bound cursor reset.
	Retention     time.Duration
	RetentionText string
	// Status and Dead serve GET /status and GET /dead.
	Status, Dead http.Handler
	Log          *zap.Logger
	Now          func() time.Time
}

// RetryRequest is the body of POST /dead/retry.
type RetryRequest struct {
	EventIDs []string `json:"event_ids"`
	All      bool     `json:"all"`
}

// RetryAnswer lists what was queued, as the records were before, and (with all) those that
// cannot be retried.
type RetryAnswer struct {
	Queued       []Retried `json:"queued"`
	NotRetryable []Retried `json:"not_retryable"`
}

// Retried is one delivery named in a RetryAnswer.
type Retried struct {
	EventID string `json:"event_id"`
	Kind    string `json:"kind"`
	State   string `json:"state"`
	Reason  string `json:"reason"`
}

// CursorRequest is the body of POST /cursor/set (EventID) and POST /cursor/reset (Since).
type CursorRequest struct {
	EventID string    `json:"event_id,omitempty"`
	Since   time.Time `json:"since,omitzero"`
}

// CursorAnswer says what the cursor was before the change.
type CursorAnswer struct {
	Before string `json:"before"`
}

// errorAnswer is the body of every error answer.
type errorAnswer struct {
	Error string `json:"error"`
}

// refused is an operator's request that changed nothing: 422.
type refused struct{ error }

// Routes are the control socket's routes.
func (c *Control) Routes() map[string]http.Handler {
	if c.Now == nil {
		c.Now = time.Now
	}
	return map[string]http.Handler{
		"/status":       c.Status,
		"/dead":         c.Dead,
		"/dead/retry":   c.post(c.retry),
		"/cursor/set":   c.post(c.setCursor),
		"/cursor/reset": c.post(c.resetCursor),
		"/trace":        TraceHandler(c.Store),
	}
}

func (c *Control) retry(r *http.Request) (any, error) {
	var req RetryRequest
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	switch {
	case req.All && len(req.EventIDs) > 0:
		return nil, refused{errors.New("give either event ids or all, not both")}
	case !req.All && len(req.EventIDs) == 0:
		return nil, refused{errors.New("give the event ids to retry, or all")}
	}
	for _, id := range req.EventIDs {
		if !workosapi.ValidEventID(id) {
			return nil, refused{fmt.Errorf("%q is not a WorkOS event id; nothing was queued", OneLine(id, 80))}
		}
	}
	var queued, notRetryable []store.Delivery
	var err error
	if req.All {
		queued, notRetryable, err = c.Store.RequestRetryAll(c.Now())
	} else {
		queued, err = c.Store.RequestRetry(c.Now(), req.EventIDs...)
	}
	var refusedErr *store.RetryRefusedError
	if errors.As(err, &refusedErr) {
		return nil, refused{err}
	}
	if err != nil {
		return nil, err
	}
	c.Log.Info("deliveries queued for retry by an operator (control socket)", zap.Int("queued", len(queued)),
		zap.Int("not_retryable", len(notRetryable)))
	return RetryAnswerOf(queued, notRetryable), nil
}

// RetryAnswerOf is the answer naming queued and notRetryable.
func RetryAnswerOf(queued, notRetryable []store.Delivery) RetryAnswer {
	return RetryAnswer{Queued: retried(queued), NotRetryable: retried(notRetryable)}
}

func retried(ds []store.Delivery) []Retried {
	out := make([]Retried, len(ds))
	for i, d := range ds {
		out[i] = Retried{EventID: d.EventID, Kind: d.Kind, State: string(d.State), Reason: d.Reason}
	}
	return out
}

func (c *Control) setCursor(r *http.Request) (any, error) {
	var req CursorRequest
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	if !workosapi.ValidEventID(req.EventID) {
		return nil, refused{fmt.Errorf("%q is not a WorkOS event id", OneLine(req.EventID, 80))}
	}
	return c.moveCursor(r.Context(), "cursor set", func() error { return c.Store.SetCursor(req.EventID, c.Now()) },
		zap.String("cursor", req.EventID))
}

func (c *Control) resetCursor(r *http.Request) (any, error) {
	var req CursorRequest
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	if req.Since.IsZero() {
		return nil, refused{errors.New("since is required")}
	}
	if err := worker.CheckBackfillSince(req.Since, c.Now(), c.Retention, c.RetentionText); err != nil {
		return nil, refused{err}
	}
	return c.moveCursor(r.Context(), "cursor reset", func() error { return c.Store.ResetCursor(req.Since) },
		zap.Time("since", req.Since))
}

// changeWait bounds how long a cursor change waits for the sends in flight: below the
// client's patience (cmd/workos-emailer: 2 min) and the socket's write timeout, so the answer
// always arrives.
const changeWait = 90 * time.Second

// moveCursor applies a cursor change between two terms of the pipeline.
func (c *Control) moveCursor(ctx context.Context, what string, move func() error, field zap.Field) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, changeWait)
	defer cancel()
	var before string
	err := c.Worker.Interrupt(ctx, func() error {
		pos, err := c.Store.Position()
		if err != nil {
			return err
		}
		before = pos.Cursor
		return move()
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w; nothing was changed", what, err)
	}
	c.Log.Info("cursor moved by an operator (control socket); polling resumes from it", zap.String("command", what),
		zap.String("before", before), field)
	return CursorAnswer{Before: before}, nil
}

// post serves a POST route whose handler answers a JSON document.
func (c *Control) post(handle func(*http.Request) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			writeJSON(w, http.StatusMethodNotAllowed, errorAnswer{"method not allowed"})
			return
		}
		if err := c.sameStore(r); err != nil {
			writeJSON(w, http.StatusUnprocessableEntity, errorAnswer{err.Error()})
			return
		}
		doc, err := handle(r)
		var ref refused
		switch {
		case errors.As(err, &ref):
			writeJSON(w, http.StatusUnprocessableEntity, errorAnswer{err.Error()})
		case errors.Is(err, worker.ErrNotRunning):
			writeJSON(w, http.StatusServiceUnavailable, errorAnswer{err.Error()})
		case err != nil:
			c.Log.Error("control socket: request failed", zap.String("path", r.URL.Path), zap.Error(err))
			writeJSON(w, http.StatusInternalServerError, errorAnswer{err.Error()})
		default:
			writeJSON(w, http.StatusOK, doc)
		}
	})
}

// StoreHeader names, on a request to the control socket, the store the asking command means;
// the daemon refuses a change for another store than its own.
const StoreHeader = "Workos-Emailer-Store"

func (c *Control) sameStore(r *http.Request) error {
	if want := r.Header.Get(StoreHeader); want != "" && want != absPath(c.Store.Path()) {
		return fmt.Errorf("this daemon runs with the store %s, not %s: nothing was changed; is admin.socket shared by two "+
			"instances?", absPath(c.Store.Path()), want)
	}
	return nil
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return refused{fmt.Errorf("unreadable request: %w", err)}
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// ListenControl binds the control socket at path and serves routes on it. The store's lock is
// held by the caller, so a socket file left at path by a process that died is stale: it is
// replaced. The socket is created with mode 0600 (no moment at which others may connect).
func ListenControl(path string, routes map[string]http.Handler, log *zap.Logger) (*Server, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("control socket %s: a file that is not a socket is in the way; move it or set admin.socket", path)
		}
		// Our store's lock makes a socket left by another daemon of this store stale, but an
		// admin.socket two instances share is not: never take over one that answers.
		if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another process answers there (another instance with the same "+
				"admin.socket?); give each instance its own", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control socket %s: removing the stale socket: %w", path, err)
		}
	}
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: cannot listen: %w (set admin.socket to a writable path)", path, err)
	}
	// A cursor change waits up to changeWait for the sends in flight; its answer comes after.
	return serve("control socket", ln, routes, changeWait+30*time.Second, log), nil
}

// Client asks a running daemon through its control socket.
type Client struct {
	Socket string
	// Store, when set, is the store the caller means (StoreHeader): the daemon refuses a change
	// for another.
	Store string
	http  *http.Client
}

// NewClient is a client of the control socket at path, for the store at store ("": any).
func NewClient(path, store string) *Client {
	return &Client{Socket: path, Store: store, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}
}

// ErrNoDaemon means no daemon answers at the socket: none runs with this store, or the caller
// may not connect (wrapped: the dial's error says which).
var ErrNoDaemon = errors.New("no daemon answers at the control socket")

// RefusedError is the daemon's refusal of a request: nothing changed.
type RefusedError struct{ Message string }

func (e *RefusedError) Error() string { return e.Message }

// Get fetches a document (GET /status, /dead) into doc.
func (c *Client) Get(ctx context.Context, path string, doc any) error {
	return c.do(ctx, http.MethodGet, path, nil, doc)
}

// Post sends a change and reads its answer into answer.
func (c *Client) Post(ctx context.Context, path string, body, answer any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, path, b, answer)
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, answer any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://control"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Store != "" {
		req.Header.Set(StoreHeader, c.Store)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op == "dial" {
			return fmt.Errorf("%w (%s): %w", ErrNoDaemon, c.Socket, opErr.Err)
		}
		return fmt.Errorf("control socket %s: %w", c.Socket, err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode != http.StatusOK {
		var e errorAnswer
		if err := dec.Decode(&e); err != nil || e.Error == "" {
			return fmt.Errorf("control socket %s: HTTP %s", c.Socket, resp.Status)
		}
		if resp.StatusCode == http.StatusUnprocessableEntity {
			return &RefusedError{e.Error}
		}
		return fmt.Errorf("the daemon answered: %s", e.Error)
	}
	if err := dec.Decode(answer); err != nil {
		return fmt.Errorf("control socket %s: unreadable answer: %w", c.Socket, err)
	}
	return nil
}

// OneLine keeps a table cell or a message on one line and bounded.
func OneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "..."
	}
	return s
}
