//go:build !nodemo

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/workos-emailer/workos-emailer/internal/fakeworkos"
	"github.com/workos-emailer/workos-emailer/internal/sealed"
	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/store"
	"github.com/workos-emailer/workos-emailer/worker"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

func newDemoCmd(stdout, stderr io.Writer) *cobra.Command {
	var dir string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole pipeline against a simulated WorkOS, writing .eml files; no account needed",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := zapcore.WarnLevel
			if verbose {
				level = zapcore.InfoLevel
			}
			encCfg := zap.NewDevelopmentEncoderConfig()
			log := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(encCfg), zapcore.AddSync(stderr), level))
			return runDemo(cmd.Context(), dir, stdout, log)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "./demo-out", "where the demo keeps its store and outbox (recreated on each run)")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "show the daemon's log")
	return cmd
}

// germanOrg is the demo organization whose emails are in German (templates.org_locales).
var germanOrg string

// demoScenario fills a simulated WorkOS with one event of every kind, plus an expired code and a
// revoked invitation (created and resent) that must not go out, an invitation to an organization
// that reads German and its resend (a reminder), a user whose WorkOS locale is de-DE, and a
// user who signs up, verifies the address (welcomed once) and changes the password.
func demoScenario(fw *fakeworkos.Server, now time.Time) {
	org := fw.AddOrganization("Acme Robotics")
	inviter := fw.AddUser("Ada", "Lovelace", "ada@acme.example")
	fw.AddInvitation(fakeworkos.Invitation{Email: "grace@example.com", ExpiresAt: now.Add(7 * 24 * time.Hour),
		OrganizationID: org, InviterUserID: inviter})
	germanOrg = fw.AddOrganization("Müller & Söhne GmbH")
	_, jonas, _ := fw.AddInvitation(fakeworkos.Invitation{Email: "jonas@example.de", ExpiresAt: now.Add(3 * 24 * time.Hour),
		OrganizationID: germanOrg, InviterUserID: inviter})
	fw.ResendInvitation(jonas, now.Add(7*24*time.Hour))
	_, margaret := fw.SignUp("Margaret", "Hamilton", "margaret@example.com", false, map[string]string{"locale": "fr"})
	fw.VerifyEmail(margaret)
	fw.VerifyEmail(margaret) // a second verification: the welcome goes out once
	fw.ChangePassword(margaret)
	alan := fw.AddUser("Alan", "Turing", "alan@example.com")
	fw.AddCode("magic_auth", "alan@example.com", alan, now.Add(10*time.Minute))
	fw.AddRadarChallenge("alan@example.com", alan, now.Add(10*time.Minute))
	juergen := fw.AddUser("Jürgen", "Schmidt", "juergen@example.de")
	fw.Update(juergen, map[string]any{"locale": "de-DE"})
	fw.AddCode("magic_auth", "juergen@example.de", juergen, now.Add(10*time.Minute))
	fw.AddCode("email_verification", "katherine@example.com", "user_01DEMOKATHERINE", now.Add(24*time.Hour))
	fw.AddPasswordReset("linus@example.com", "user_01DEMOLINUS", now.Add(time.Hour))
	fw.AddCode("magic_auth", "expired@example.com", "user_01DEMOEXPIRED", now.Add(-5*time.Minute))
	_, revoked, _ := fw.AddInvitation(fakeworkos.Invitation{Email: "revoked@example.com",
		ExpiresAt: now.Add(7 * 24 * time.Hour), OrganizationID: org})
	fw.ResendInvitation(revoked, now.Add(7*24*time.Hour))
	fw.Update(revoked, map[string]any{"state": "revoked", "revoked_at": now.UTC().Format(time.RFC3339)})
}

func runDemo(ctx context.Context, dir string, out io.Writer, log *zap.Logger) error {
	outbox := filepath.Join(dir, "outbox")
	dbPath := filepath.Join(dir, "state.db")
	for _, p := range []string{outbox, dbPath} {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("clean demo directory %s: %w", dir, err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create demo directory %s: %w", dir, err)
	}
	fw := fakeworkos.New("sk_test_demo")
	demoScenario(fw, time.Now())
	url := fw.Start()
	defer fw.Close()

	st, err := store.Open(dbPath, store.Options{Kinds: kinds.Names()})
	if err != nil {
		return err
	}
	defer st.Close()
	templates, err := mailer.LoadTemplates(mailer.TemplateOptions{
		Brand:      mailer.Brand{Name: "Robodesk", PrimaryColor: "#0f766e", SupportEmail: "support@robodesk.example"},
		OrgLocales: map[string]string{germanOrg: "de"},
	})
	if err != nil {
		return err
	}
	sender := &mailer.File{Dir: outbox, From: "Robodesk <no-reply@robodesk.example>"}
	// The send API's side, as api.listen turns it on: the demo asks in-process, as the API does.
	sealer, err := sealed.New("demo-api-token-not-a-secret-0123456789")
	if err != nil {
		return err
	}
	opts := worker.Options{
		PageSize: 100, StopWhenIdle: true, Kinds: kinds.Names(), AppURL: "https://app.robodesk.example/",
		UserLocaleKey: "locale", Sealer: sealer,
	}
	fmt.Fprintf(out, "Simulated WorkOS at %s with %d events and a Magic Link request; sending with the file mailer.\n\n", url, len(fw.EventIDs()))
	for run := 1; run <= 2; run++ {
		w := worker.New(opts, workosapi.New("sk_test_demo", url, 0, nil), st, sender, templates, log)
		// The app asks for a Magic Link, and asks again (a retry) in the second run: one email.
		if _, err := w.Accept(worker.Request{Kind: kinds.MagicLink, Email: "hedy@example.com", Locale: "es"}, "demo-sign-in-1"); err != nil {
			return err
		}
		if err := w.Run(ctx); err != nil {
			return err
		}
	}

	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EVENT\tKIND\tSTATE\tDETAIL")
	counts := map[store.State]int{}
	err = st.ForEach(func(d store.Delivery) error {
		counts[d.State]++
		detail := d.Reason
		if d.State == store.Sent {
			detail = filepath.Join(outbox, strings.TrimPrefix(d.MessageID, "file:"))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.EventID, d.Kind, d.State, detail)
		return nil
	})
	if err != nil {
		return err
	}
	_ = tw.Flush()
	fmt.Fprintf(out, "\nsent=%d skipped=%d dead=%d ambiguous=%d\n", counts[store.Sent], counts[store.Skipped], counts[store.Dead], counts[store.Ambiguous])
	fmt.Fprintf(out, "The pipeline ran twice over the same events and Magic Link request (a restart, a retry): nothing was sent twice.\n")
	fmt.Fprintf(out, "Emails: %s (open the .eml files with any mail client)\n", outbox)
	return nil
}
