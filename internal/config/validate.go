package config

import (
	"cmp"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"text/template"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/workos-emailer/workos-emailer/internal/urlpolicy"
	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/sendapi"
	"github.com/workos-emailer/workos-emailer/store/postgres"
	"github.com/workos-emailer/workos-emailer/worker"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

var hexColor = regexp.MustCompile(`^#([0-9A-Fa-f]{3}|[0-9A-Fa-f]{6})$`)

// validate checks every key and fills the derived fields, one section at a time, in an order
// where each section's defaults are filled before a later one reads them (brand.name from
// mailer.from, the kinds api.listen enables after events.enabled is checked). Errors name the key.
func (c *Config) validate() error {
	for _, section := range []func() error{
		c.resolveSecrets, c.validateWorkOS, c.validateStore, c.validateMailer, c.validateDelivery, c.validateEvents,
		c.validateTemplates, c.validateLinks, c.validateBrand, c.validateAdmin, c.validateAPI,
		c.validateOrganizations, c.validateLog,
	} {
		if err := section(); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) validateWorkOS() error {
	// Every request carries the API key: over plain http it would cross the network in clear.
	if err := urlpolicy.Check(c.WorkOS.BaseURL); err != nil {
		return KeyError("workos.base_url", "%v, got %q: the API key travels with every request", err, c.WorkOS.BaseURL)
	}
	if c.WorkOS.PollInterval <= 0 {
		return KeyError("workos.poll_interval", "must be positive")
	}
	if !(c.WorkOS.MaxRequestsPerSecond > 0) || c.WorkOS.MaxRequestsPerSecond > 10000 {
		return KeyError("workos.max_requests_per_second", "must be more than 0 and at most 10000, got %v (WorkOS allows "+
			"1,000 user-management reads per 10 s per environment, and the app shares them)", c.WorkOS.MaxRequestsPerSecond)
	}
	if c.WorkOS.PageSize < 1 || c.WorkOS.PageSize > 100 {
		return KeyError("workos.page_size", "must be between 1 and 100, got %d", c.WorkOS.PageSize)
	}
	switch c.WorkOS.Start {
	case "now", "oldest":
	default:
		t, err := time.Parse(time.RFC3339, c.WorkOS.Start)
		if err != nil {
			return KeyError("workos.start", "must be now, oldest or an RFC 3339 time, got %q", c.WorkOS.Start)
		}
		c.startAt = t
	}
	return nil
}

func (c *Config) validateStore() error {
	switch c.Store.Driver {
	case StoreBolt:
		if c.Store.Path == "" {
			return KeyError("store.path", "must not be empty")
		}
	case StorePostgres:
		if c.Store.DSN == "" {
			return KeyError("store.dsn", "must be set with store.driver: postgres (a PostgreSQL connection string, "+
				"postgres://user:password@host:5432/db; a secret: WORKOS_EMAILER_STORE_DSN, store.dsn_file or the systemd credential store_dsn)")
		}
		if _, err := postgres.Describe(c.Store.DSN); err != nil {
			return KeyError("store.dsn", "%v", err)
		}
		if c.Store.LeaseTTL < 2*time.Second || c.Store.LeaseTTL > 5*time.Minute {
			return KeyError("store.lease_ttl", "must be from 2s to 5m, got %s: a standby takes over about this long after the leader stops",
				FormatDuration(c.Store.LeaseTTL))
		}
	default:
		return KeyError("store.driver", "must be bolt or postgres, got %q", c.Store.Driver)
	}
	if c.Store.Retention < worker.MinRetention {
		return KeyError("store.retention", "must be at least 31d, got %s: WorkOS lists events for about 30 days, and a "+
			"record pruned while its event can still be listed would let a restart or backfill send that email again",
			FormatDuration(c.Store.Retention))
	}
	return nil
}

func (c *Config) validateMailer() error {
	switch c.Mailer.Driver {
	case "ses":
		if c.Mailer.From == "" && !c.previewOnly {
			return KeyError("mailer.from", "is required for the ses driver, e.g. \"Acme <no-reply@acme.com>\"")
		}
		if c.Mailer.SES.Endpoint != "" {
			if u, err := url.Parse(c.Mailer.SES.Endpoint); err != nil || u.Host == "" {
				return KeyError("mailer.ses.endpoint", "must be a URL, got %q", c.Mailer.SES.Endpoint)
			}
		}
		if q := c.Mailer.SES.FeedbackQueueURL; q != "" {
			if u, err := url.Parse(q); err != nil || u.Host == "" || strings.Trim(u.Path, "/") == "" || urlpolicy.Check(q) != nil {
				return KeyError("mailer.ses.feedback_queue_url", "must be an SQS queue URL like "+
					"https://sqs.us-east-1.amazonaws.com/123456789012/ses-feedback (http only to loopback), got %q", q)
			}
		}
	case "file":
		if c.Mailer.File.Dir == "" {
			return KeyError("mailer.file.dir", "must not be empty")
		}
	case "smtp":
		if err := c.validateSMTP(); err != nil {
			return err
		}
	case "log":
	default:
		return KeyError("mailer.driver", "must be ses, smtp, file or log, got %q", c.Mailer.Driver)
	}
	if c.Mailer.SES.FeedbackQueueURL != "" && c.Mailer.Driver != "ses" {
		return KeyError("mailer.ses.feedback_queue_url", "is SES's feedback: it needs mailer.driver ses, not %s", c.Mailer.Driver)
	}
	if c.Mailer.From == "" {
		c.Mailer.From = "workos-emailer <no-reply@localhost>"
	}
	if err := c.checkSender("mailer.from", c.Mailer.From); err != nil {
		return err
	}
	if c.Mailer.ReplyTo != "" {
		if _, err := mailer.ParseSender(c.Mailer.ReplyTo); err != nil {
			return KeyError("mailer.reply_to", "%v", err)
		}
	}
	if c.Mailer.ListUnsubscribe != "" {
		if err := mailer.CheckListUnsubscribe(c.Mailer.ListUnsubscribe); err != nil {
			return KeyError("mailer.list_unsubscribe", "%v", err)
		}
	}
	if c.Mailer.SES.MaxSendRate < 0 {
		return KeyError("mailer.ses.max_send_rate", "must not be negative")
	}
	return nil
}

// checkSender parses a From address (mailer.from, organizations.*.from) and, for a driver that
// delivers to real inboxes, refuses a placeholder domain left from a sample config: SES would
// refuse every email from it, and an SMTP relay would send mail nobody can answer.
func (c *Config) checkSender(key, from string) error {
	addr, err := mailer.ParseSender(from)
	if err != nil {
		return KeyError(key, "%v", err)
	}
	if c.previewOnly || (c.Mailer.Driver != "ses" && c.Mailer.Driver != "smtp") {
		return nil
	}
	_, domain, _ := strings.Cut(addr.Address, "@")
	if placeholderDomain(domain) {
		return KeyError(key, "%s is a placeholder domain (reserved by RFC 2606, no one's mail): use your own, verified "+
			"with the mail provider", domain)
	}
	return nil
}

// placeholderDomain reports the domains RFC 2606 reserves for documentation and examples.
func placeholderDomain(domain string) bool {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	for _, reserved := range []string{"example.com", "example.net", "example.org", "example", "invalid"} {
		if domain == reserved || strings.HasSuffix(domain, "."+reserved) {
			return true
		}
	}
	return false
}

func (c *Config) validateDelivery() error {
	if c.Delivery.Concurrency < 1 || c.Delivery.Concurrency > 256 {
		return KeyError("delivery.concurrency", "must be between 1 and 256, got %d", c.Delivery.Concurrency)
	}
	if c.Delivery.MaxAttempts < 1 {
		return KeyError("delivery.max_attempts", "must be at least 1")
	}
	if c.Delivery.MaxEventAge < 0 {
		return KeyError("delivery.max_event_age", "must not be negative")
	}
	if c.Delivery.OnAmbiguous != worker.OnAmbiguousHold && c.Delivery.OnAmbiguous != worker.OnAmbiguousResend {
		return KeyError("delivery.on_ambiguous", "must be hold or resend, got %q", c.Delivery.OnAmbiguous)
	}
	return nil
}

func (c *Config) validateEvents() error {
	if len(c.Events.Enabled) == 0 {
		return KeyError("events.enabled", "must name at least one kind")
	}
	for _, k := range c.Events.Enabled {
		if !slices.Contains(kinds.Names(), k) {
			return KeyError("events.enabled", "unknown kind %q (kinds: %s)", k, strings.Join(kinds.Names(), ", "))
		}
	}
	return nil
}

func (c *Config) validateTemplates() error {
	var err error
	if c.timeZone, err = time.LoadLocation(c.Templates.TimeZone); err != nil || c.Templates.TimeZone == "" {
		return KeyError("templates.time_zone", "must be an IANA time zone like UTC or Europe/Berlin, got %q", c.Templates.TimeZone)
	}
	if strings.ContainsAny(c.Templates.UserLocaleKey, " \r\n") {
		return KeyError("templates.user_locale_key", "must be a metadata key, got %q", c.Templates.UserLocaleKey)
	}
	return nil
}

func (c *Config) validateLinks() error {
	var err error
	if c.Links.AppURL != "" {
		if err := urlpolicy.Check(c.Links.AppURL); err != nil {
			return KeyError("links.app_url", "%v", err)
		}
	}
	if c.invitationURL, err = linkTemplate("links.invitation_url", c.Links.InvitationURL); err != nil {
		return err
	}
	if c.passwordURL, err = linkTemplate("links.password_reset_url", c.Links.PasswordResetURL); err != nil {
		return err
	}
	return nil
}

func (c *Config) validateBrand() error {
	if c.Brand.LogoURL != "" {
		if err := urlpolicy.Check(c.Brand.LogoURL); err != nil {
			return KeyError("brand.logo_url", "%v", err)
		}
	}
	if c.Brand.PrimaryColor != "" && !hexColor.MatchString(c.Brand.PrimaryColor) {
		return KeyError("brand.primary_color", "must be a hex color like #4f46e5, got %q", c.Brand.PrimaryColor)
	}
	if c.Brand.SupportEmail != "" {
		if _, err := mailer.ParseRecipient(c.Brand.SupportEmail); err != nil {
			return KeyError("brand.support_email", "%v", err)
		}
	}
	if strings.ContainsAny(c.Brand.Name, "\r\n") {
		return KeyError("brand.name", "must be one line")
	}
	if c.Brand.Name == "" {
		c.Brand.Name = brandFromSender(c.Mailer.From)
	}
	return nil
}

func (c *Config) validateAdmin() error {
	if c.Admin.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Admin.Listen); err != nil {
			return KeyError("admin.listen", "must be host:port, got %q", c.Admin.Listen)
		}
	}
	socket := c.Admin.Socket
	switch {
	case socket != "":
	case c.Store.Driver == StorePostgres:
		// No store file to sit beside: systemd's RuntimeDirectory=, else the working directory.
		socket = filepath.Join(cmp.Or(strings.Split(os.Getenv("RUNTIME_DIRECTORY"), ":")[0], "."), "workos-emailer.sock")
	default:
		socket = c.Store.Path + ".sock"
	}
	abs, err := filepath.Abs(socket)
	if err != nil {
		return KeyError("admin.socket", "%v", err)
	}
	if len(abs) > maxSocketPath {
		key := "admin.socket"
		if c.Admin.Socket == "" && c.Store.Driver == StoreBolt {
			key = "store.path"
		}
		return KeyError(key, "the control socket %s is longer than the %d bytes a unix socket path may have: set admin.socket "+
			"to a shorter path", abs, maxSocketPath)
	}
	c.controlSocket = abs
	return nil
}

// maxSocketPath is the longest unix socket path Linux accepts (sun_path less its NUL).
const maxSocketPath = 107

func (c *Config) validateLog() error {
	var err error
	if c.logLevel, err = zapcore.ParseLevel(c.Log.Level); err != nil {
		return KeyError("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	if c.Log.Format != "json" && c.Log.Format != "console" {
		return KeyError("log.format", "must be json or console, got %q", c.Log.Format)
	}
	return nil
}

// validateSMTP checks mailer.smtp.* and mailer.from for the smtp driver; the password comes
// from the environment or a file, and no error echoes it.
func (c *Config) validateSMTP() error {
	s := &c.Mailer.SMTP
	switch {
	case c.Mailer.From == "" && !c.previewOnly:
		return KeyError("mailer.from", "is required for the smtp driver, e.g. \"Acme <no-reply@acme.com>\"")
	case s.Host == "" && !c.previewOnly:
		return KeyError("mailer.smtp.host", "is required for the smtp driver")
	case s.Port < 1 || s.Port > 65535:
		return KeyError("mailer.smtp.port", "must be a port number, got %d", s.Port)
	case s.MaxSendRate < 0:
		return KeyError("mailer.smtp.max_send_rate", "must not be negative")
	}
	switch s.TLS {
	case mailer.SMTPStartTLS, mailer.SMTPImplicit:
	case mailer.SMTPNoTLS:
		if s.Host != "" && !urlpolicy.Loopback(s.Host) {
			return KeyError("mailer.smtp.tls", "none sends the password and every code in clear: only for a relay on loopback, not %s", s.Host)
		}
	default:
		return KeyError("mailer.smtp.tls", "must be starttls, implicit or none, got %q", s.TLS)
	}
	if s.Password != "" && s.Username == "" {
		return KeyError("mailer.smtp.username", "is required with a password")
	}
	return nil
}

// validateOrganizations checks organizations.*: ids of WorkOS organizations, senders that
// parse like mailer.from, locales merged into templates.org_locales (whose messages
// LoadTemplates checks).
func (c *Config) validateOrganizations() error {
	c.senders = map[string]mailer.Sender{}
	if c.Templates.OrgLocales == nil {
		c.Templates.OrgLocales = map[string]string{}
	}
	for id, o := range c.Organizations {
		key := "organizations." + id
		if !strings.HasPrefix(id, "org_") || !workosapi.ValidObjectID(id) {
			return KeyError(key, "is not a WorkOS organization id (org_...)")
		}
		if o.From != "" {
			if err := c.checkSender(key+".from", o.From); err != nil {
				return err
			}
		}
		if o.ReplyTo != "" {
			if _, err := mailer.ParseSender(o.ReplyTo); err != nil {
				return KeyError(key+".reply_to", "%v", err)
			}
		}
		if strings.ContainsAny(o.ConfigurationSet, " \r\n") {
			return KeyError(key+".configuration_set", "must be an SES configuration set name")
		}
		if o.Locale != "" {
			if other, ok := c.Templates.OrgLocales[id]; ok && other != o.Locale {
				return KeyError(key+".locale", "is %q, but templates.org_locales says %q: keep one", o.Locale, other)
			}
			c.Templates.OrgLocales[id] = o.Locale
		}
		if o.From != "" || o.ReplyTo != "" || o.ConfigurationSet != "" {
			c.senders[id] = mailer.Sender{From: o.From, ReplyTo: o.ReplyTo, ConfigurationSet: o.ConfigurationSet}
		}
	}
	return nil
}

// validateAPI checks api.*: the send API needs a listen address and a long token, and it is what
// enables the kinds sent on request. No error echoes a token.
func (c *Config) validateAPI() error {
	onRequest := kinds.OnRequest()
	if c.API.Listen == "" {
		for _, k := range c.Events.Enabled {
			if slices.Contains(onRequest, k) {
				return KeyError("events.enabled", "%s is sent when the app asks through the send API: set api.listen and api.token instead", k)
			}
		}
		return nil
	}
	if _, _, err := net.SplitHostPort(c.API.Listen); err != nil {
		return KeyError("api.listen", "must be host:port, got %q", c.API.Listen)
	}
	if c.API.Listen == c.Admin.Listen {
		return KeyError("api.listen", "must differ from admin.listen (%s): the admin listener stays loopback-only", c.Admin.Listen)
	}
	token := c.API.Token
	for _, t := range []struct{ key, value string }{{"api.token", token}, {"api.previous_token", c.API.PreviousToken}} {
		switch {
		case t.value == "" && t.key == "api.token":
			return KeyError("api.token", "is required when api.listen is set: set WORKOS_EMAILER_API_TOKEN, api.token_file or the api_token credential "+
				"(e.g. from openssl rand -hex 32)")
		case t.value != "" && (len(t.value) < sendapi.MinTokenLen || strings.ContainsAny(t.value, " \t\r\n")):
			return KeyError(t.key, "must be at least %d characters without spaces (e.g. openssl rand -hex 32)", sendapi.MinTokenLen)
		}
	}
	if token == c.API.PreviousToken {
		return KeyError("api.previous_token", "is the same as api.token; during a rotation it holds the old token")
	}
	c.apiTokens = []string{token}
	if c.API.PreviousToken != "" {
		c.apiTokens = append(c.apiTokens, c.API.PreviousToken)
	}
	for _, k := range onRequest {
		if !slices.Contains(c.Events.Enabled, k) {
			c.Events.Enabled = append(c.Events.Enabled, k)
		}
	}
	return nil
}

// brandFromSender names the brand after the From address when brand.name is not set: its
// display name ("Acme" of "Acme <no-reply@acme.com>"), or its domain.
func brandFromSender(from string) string {
	addr, err := mailer.ParseSender(from)
	if err != nil {
		return ""
	}
	if addr.Name != "" {
		return addr.Name
	}
	_, domain, _ := strings.Cut(addr.Address, "@")
	return domain
}

// linkTemplate parses a links.* template and checks it with a sample token.
func linkTemplate(key, s string) (*template.Template, error) {
	if s == "" {
		return nil, nil
	}
	t, err := template.New(key).Option("missingkey=error").Parse(s)
	if err != nil {
		return nil, KeyError(key, "%v", err)
	}
	var b strings.Builder
	if err := t.Execute(&b, struct{ Token string }{"sample-token"}); err != nil {
		return nil, KeyError(key, "%v", err)
	}
	if !strings.Contains(b.String(), "sample-token") {
		return nil, KeyError(key, "must contain {{.Token}}")
	}
	if err := urlpolicy.Check(b.String()); err != nil {
		return nil, KeyError(key, "%v", err)
	}
	return t, nil
}
