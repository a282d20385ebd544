package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/mailer"
)

// testSubjectPrefix marks a test email in the reader's inbox: it carries sample data, never a
// code or link anyone can use.
const testSubjectPrefix = "[Test] "

// newSendCmd groups the commands that send an email now, outside the event stream.
func newSendCmd(load loadFunc, stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "send",
		Short: "Send an email now, outside the event stream (test: a template with sample data; magic-link: through the daemon)",
	}
	cmd.AddCommand(newSendTestCmd(load, stdout, stderr), newSendMagicLinkCmd(load, stdout))
	return cmd
}

// newSendTestCmd sends one kind's sample email through the configured mailer, to check the
// templates, the brand and the mail setup end to end. Nothing is recorded: it is not an event.
func newSendTestCmd(load loadFunc, stdout, stderr io.Writer) *cobra.Command {
	var to, locale, org, variant string
	cmd := &cobra.Command{
		Use:   "test KIND --to ADDR [--variant V] [--locale L] [--org ORG]",
		Short: "Send KIND's sample email to ADDR through the configured mailer, subject marked " + strings.TrimSpace(testSubjectPrefix),
		Long: "Renders KIND (" + strings.Join(kinds.Names(), ", ") + ") with sample data, as `render` does, and sends it\n" +
			"through mailer.driver with the subject marked " + strings.TrimSpace(testSubjectPrefix) + ". The sample's code and link are\n" +
			"made up and work nowhere. Nothing is recorded in the store, and no WorkOS call is made.",
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) != 1:
				return usageError{fmt.Errorf("send test takes one KIND (%s)", strings.Join(kinds.Names(), ", "))}
			case !slices.Contains(kinds.Names(), args[0]):
				return usageError{fmt.Errorf("unknown kind %q (kinds: %s)", args[0], strings.Join(kinds.Names(), ", "))}
			case to == "":
				return usageError{fmt.Errorf("send test needs --to ADDR: where the test email goes")}
			}
			addr, err := mailer.ParseRecipient(to)
			if err != nil {
				return usageError{fmt.Errorf("--to: %w", err)}
			}
			cfg, err := load(cmd)
			if err != nil {
				return err
			}
			templates, err := cfg.LoadTemplates()
			if err != nil {
				return err
			}
			now := time.Now()
			p, err := templates.RenderSample(args[0], variant, org, locale, now)
			if err != nil {
				return usageError{err}
			}
			log := newLogger(cfg, cfg.LogLevel(), stderr)
			defer func() { _ = log.Sync() }()
			sender, err := newSender(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			// The id names the .eml file (file driver) and the SES tag; no event has it.
			id := "test-" + now.UTC().Format("20060102T150405.000Z")
			msgID, err := sender.Send(cmd.Context(), mailer.Message{To: addr, Subject: testSubjectPrefix + p.Subject,
				HTML: p.HTML, Text: p.Text, EventID: id, Kind: p.Kind, Date: now, Sender: p.Sender})
			if err != nil {
				return fmt.Errorf("send the test email through %s: %w", cfg.Mailer.Driver, err)
			}
			log.Info("test email sent", zap.String("kind", p.Kind), zap.String("locale", p.Locale), zap.String("message_id", msgID))
			fmt.Fprintf(stdout, "sent a test %s email (locale %s) through %s: message id %s\n", describeSample(p), p.Locale, cfg.Mailer.Driver, msgID)
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the address to send the test email to (required)")
	cmd.Flags().StringVar(&variant, "variant", "", "send this variant of KIND's sample ("+variantList()+")")
	cmd.Flags().StringVar(&locale, "locale", "", "locale to write in (default: the organization's, else templates.default_locale)")
	cmd.Flags().StringVar(&org, "org", "", "organization id whose templates and locale to use")
	return cmd
}

// describeSample names a sample: "invitation", "invitation (reminder)".
func describeSample(p mailer.Preview) string {
	if p.Variant != "" {
		return p.Kind + " (" + p.Variant + ")"
	}
	return p.Kind
}
