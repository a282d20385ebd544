package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/workos-emailer/workos-emailer/internal/config"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

// newSendMagicLinkCmd asks the running daemon's send API for a Magic Link email, as the app
// would: the daemon holds the store, and only it creates the session and sends.
func newSendMagicLinkCmd(load loadFunc, stdout io.Writer) *cobra.Command {
	var redirectURI, state, locale, org, key string
	cmd := &cobra.Command{
		Use:   "magic-link EMAIL [--redirect-uri URL] [--state S] [--locale L] [--org ORG]",
		Short: "Ask the running daemon (api.listen) to send a Magic Link to EMAIL",
		Long: "Posts to the running daemon's send API at api.listen with api.token, as the app does: the daemon\n" +
			"creates the WorkOS Passwordless Session and sends the magic_link email. It prints the request's id\n" +
			"and state once the daemon has recorded the request. With --idempotency-key, running it again\n" +
			"sends nothing more.",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{errors.New("send magic-link takes one EMAIL")}
			}
			cfg, err := load(cmd)
			if err != nil {
				return err
			}
			if cfg.API.Listen == "" {
				return config.KeyError("api.listen", "is not set: the send API is off, so no daemon takes Magic Link requests")
			}
			body, _ := json.Marshal(map[string]string{"email": args[0], "redirect_uri": redirectURI, "state": state,
				"locale": locale, "organization_id": org})
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+dialable(cfg.API.Listen)+"/v1/magic_link", bytes.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Authorization", "Bearer "+cfg.APITokens()[0])
			req.Header.Set("Content-Type", "application/json")
			if key != "" {
				req.Header.Set("Idempotency-Key", key)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("reach the daemon's send API at %s (is it running?): %w", cfg.API.Listen, err)
			}
			defer func() { _ = resp.Body.Close() }()
			var out struct {
				ID    string `json:"id"`
				State string `json:"state"`
				Error struct {
					Code, Field, Message string
				} `json:"error"`
			}
			if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&out); err != nil {
				return fmt.Errorf("the send API answered %s with an unreadable body: %w", resp.Status, err)
			}
			if resp.StatusCode != http.StatusAccepted {
				msg := fmt.Errorf("the send API refused the request (%s): %s", resp.Status, out.Error.Message)
				if out.Error.Field != "" {
					msg = fmt.Errorf("the send API refused the request (%s): %s: %s", resp.Status, out.Error.Field, out.Error.Message)
				}
				if resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusUnprocessableEntity {
					return usageError{msg}
				}
				return msg
			}
			fmt.Fprintf(stdout, "Magic Link request %s accepted (%s); the daemon sends it\n", out.ID, out.State)
			return nil
		},
	}
	cmd.Flags().StringVar(&redirectURI, "redirect-uri", "", "where WorkOS sends the user after sign-in (https, or http to localhost)")
	cmd.Flags().StringVar(&state, "state", "", "opaque value WorkOS passes back to the redirect URI")
	cmd.Flags().StringVar(&locale, "locale", "", "locale to write in (default: the organization's, else templates.default_locale)")
	cmd.Flags().StringVar(&org, "org", "", "organization id whose templates and locale to use")
	cmd.Flags().StringVar(&key, "idempotency-key", "", "send at most once for this key (within 24 hours)")
	return cmd
}

// dialable turns a listen address into one to connect to: a wildcard host becomes loopback.
func dialable(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
