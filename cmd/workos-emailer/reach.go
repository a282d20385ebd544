package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/workos-emailer/workos-emailer/internal/admin"
	"github.com/workos-emailer/workos-emailer/internal/config"
	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/store"
)

// How the operator commands (status, cursor, dead) reach what they show or change.
//
// A running daemon holds its store's file lock for as long as it runs, and answers on its control
// socket beside the store (internal/admin). A command asks the daemon there first, so it always
// talks to the instance whose store its configuration names, whatever admin.listen is. Reading
// commands then try admin.listen (a CLI that may not connect to the socket: another user), and
// finally read the store file when no daemon holds it. Changing commands go through the daemon,
// which applies them between events; with no daemon they change the store file themselves.

type loadFunc = func(cmd *cobra.Command) (*config.Config, error)

// opsLockTimeout bounds the wait for the store's lock: the daemon never lets go while it runs,
// so waiting longer only delays the message.
var opsLockTimeout = time.Second

const (
	// askTimeout bounds a question to the daemon; changeTimeout a change, which for the cursor
	// waits for the sends in flight to finish.
	askTimeout    = 5 * time.Second
	changeTimeout = 2 * time.Minute
)

// sourced is a document that says who built it and about which store: *admin.Status, *admin.Dead.
type sourced interface {
	Origin() (source, storePath string)
}

// readDoc fills doc from the daemon (control socket, then admin.listen) or, when none answers,
// by calling fromStore on the store opened read-only. from says where the document came from;
// note, when not empty, why the daemon was not asked or did not answer.
func readDoc(ctx context.Context, cfg *config.Config, path string, doc sourced, fromStore func(store.Backend) error) (from, note string, err error) {
	socket := cfg.ControlSocket()
	actx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	err = admin.NewClient(socket, "").Get(actx, path, doc)
	if err == nil {
		if _, answered := doc.Origin(); answered != "" {
			if err := sameStore(cfg, answered, "the control socket "+socket); err != nil {
				return "", "", err
			}
		}
		return "daemon (control socket " + socket + ")", "", nil
	}
	if !errors.Is(err, admin.ErrNoDaemon) {
		return "", "", err
	}
	why := err.Error()
	if cfg.Admin.Listen != "" {
		url, uerr := adminURL(cfg.Admin.Listen, path)
		if uerr != nil {
			return "", "", uerr
		}
		aerr := getFromDaemon(actx, url, doc)
		if aerr == nil {
			_, answered := doc.Origin()
			if err := sameStore(cfg, answered, "admin.listen "+cfg.Admin.Listen); err != nil {
				return "", "", err
			}
			return "daemon (admin listener " + cfg.Admin.Listen + ")", why, nil
		}
		why += fmt.Sprintf("; no daemon answered at %s (%v)", url, aerr)
	}
	st, err := openStoreReadOnly(cfg)
	if errors.Is(err, store.ErrLocked) {
		return "", "", fmt.Errorf("%s, and another process (the daemon?) holds the store, so it cannot be read either; "+
			"run this as the daemon's user or root, or check that admin.socket and admin.listen are the running daemon's: %w", why, err)
	}
	if err != nil {
		return "", "", err
	}
	defer st.Close()
	if err := fromStore(st); err != nil {
		return "", "", err
	}
	if sharedStore(cfg) {
		return "database (no daemon on this host answered)", why + "; read the database instead", nil
	}
	return "store file (daemon not reachable)", why + "; read the store file instead", nil
}

// sameStore refuses an answer about another store than the configured one: with two instances
// on one host, admin.listen may name the other.
func sameStore(cfg *config.Config, answered, where string) error {
	mine, err := storeName(cfg)
	if err != nil {
		return err
	}
	if answered != mine {
		return fmt.Errorf("the daemon at %s runs with the store %s, but this configuration names %s (store.path): "+
			"it is another instance; use --config of the instance you mean, or fix admin.listen and admin.socket", where, answered, mine)
	}
	return nil
}

// changeThroughDaemon posts a change to the daemon that holds the store. It reports false, and
// changes nothing, when no daemon answers: then the caller changes the store file itself. The
// daemon's refusal is a usage error (exit 2): nothing was changed.
func changeThroughDaemon(ctx context.Context, cfg *config.Config, path string, body, answer any) (bool, error) {
	if sharedStore(cfg) {
		// The database takes every change directly, from any host; a cursor change ends the
		// leader's term, and the leader polls from the new cursor.
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, changeTimeout)
	defer cancel()
	mine, err := filepath.Abs(cfg.Store.Path)
	if err != nil {
		return false, err
	}
	err = admin.NewClient(cfg.ControlSocket(), mine).Post(ctx, path, body, answer)
	var refused *admin.RefusedError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &refused):
		return true, usageError{refused}
	case errors.Is(err, admin.ErrNoDaemon):
		return false, nil
	}
	return true, err
}

// adminURL turns admin.listen into a URL this machine can reach: a wildcard address listens on
// loopback too.
func adminURL(listen, path string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", config.KeyError("admin.listen", "must be host:port, got %q", listen)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return "http://" + net.JoinHostPort(host, port) + path, nil
}

// getFromDaemon fetches a document from the running daemon's admin listener.
func getFromDaemon(ctx context.Context, url string, doc sourced) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	var urlErr *neturl.Error
	if errors.As(err, &urlErr) {
		return urlErr.Err // the URL is named by the caller
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %s", resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(doc); err != nil {
		return fmt.Errorf("unreadable answer: %w", err)
	}
	if source, _ := doc.Origin(); source != admin.SourceDaemon {
		return errors.New("the answer is not a workos-emailer document")
	}
	return nil
}

func requireStoreFile(cfg *config.Config) error {
	_, err := os.Stat(cfg.Store.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no store at %s (store.path): the daemon has not run with this configuration yet, "+
			"or --config / store.path point elsewhere than the daemon's", cfg.Store.Path)
	}
	return nil
}

func openStoreReadOnly(cfg *config.Config) (store.Backend, error) {
	if sharedStore(cfg) {
		return openOperatorStore(cfg)
	}
	if err := requireStoreFile(cfg); err != nil {
		return nil, err
	}
	return store.Open(cfg.Store.Path, store.Options{ReadOnly: true, LockTimeout: opsLockTimeout, Kinds: kinds.Names()})
}

// openStoreForWrite opens the existing store read-write for a command that changes it, once no
// daemon answered on the control socket.
func openStoreForWrite(cfg *config.Config, command string) (store.Backend, error) {
	if sharedStore(cfg) {
		return openOperatorStore(cfg)
	}
	if err := requireStoreFile(cfg); err != nil {
		return nil, err
	}
	st, err := store.Open(cfg.Store.Path, store.Options{LockTimeout: opsLockTimeout, Kinds: kinds.Names()})
	if errors.Is(err, store.ErrLocked) {
		return nil, fmt.Errorf("%s changes the store, and another process holds it but does not answer at the control "+
			"socket %s: run this as the daemon's user or root (the socket is mode 0600), or, for an older daemon without "+
			"one, stop the service, run this again, then start it: %w", command, cfg.ControlSocket(), err)
	}
	return st, err
}

// show reads a document (readDoc: the daemon, else the store file through build) and prints it:
// as JSON with asJSON, else with print. Why the store file was read goes to stderr.
func show[D any, P interface {
	*D
	sourced
}](ctx context.Context, cfg *config.Config, path string, build func(store.Backend) (D, error), asJSON bool,
	stdout, stderr io.Writer, print func(io.Writer, D, string) error) error {
	var doc D
	from, note, err := readDoc(ctx, cfg, path, P(&doc), func(st store.Backend) error {
		var err error
		doc, err = build(st)
		return err
	})
	if err != nil {
		return err
	}
	if source, _ := P(&doc).Origin(); note != "" && source == admin.SourceStore {
		fmt.Fprintln(stderr, "note:", note)
	}
	if asJSON {
		return writeJSON(stdout, doc)
	}
	return print(stdout, doc, from)
}
