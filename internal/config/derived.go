package config

import (
	"fmt"
	"text/template"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/workos-emailer/workos-emailer/mailer"
)

// What validation derives from the keys, for the commands that wire the daemon.

// TemplateOptions is the templates.*, brand.* and organizations' sender part of the configuration.
func (c *Config) TemplateOptions() mailer.TemplateOptions {
	return mailer.TemplateOptions{
		Dir: c.Templates.Dir, DefaultLocale: c.Templates.DefaultLocale, OrgLocales: c.Templates.OrgLocales, Senders: c.senders,
		TimeZone: c.timeZone,
		Brand: mailer.Brand{Name: c.Brand.Name, LogoURL: c.Brand.LogoURL,
			PrimaryColor: c.Brand.PrimaryColor, SupportEmail: c.Brand.SupportEmail},
	}
}

// LoadTemplates parses and tries every template: a broken one is invalid configuration (exit
// 2), its message naming the file and line.
func (c *Config) LoadTemplates() (*mailer.Templates, error) {
	t, err := mailer.LoadTemplates(c.TemplateOptions())
	if err != nil {
		return nil, Error{fmt.Errorf("templates: %w", err)}
	}
	return t, nil
}

// RequireAPIKey is checked only by commands that talk to WorkOS.
func (c *Config) RequireAPIKey() error {
	if c.WorkOS.APIKey == "" {
		return KeyError("workos.api_key", "is required: set WORKOS_API_KEY, WORKOS_API_KEY_FILE (a file holding it) or the systemd credential workos_api_key")
	}
	return nil
}

// StartSince is where a store without a cursor begins: now, the oldest event (zero), or a time.
func (c *Config) StartSince() time.Time {
	switch c.WorkOS.Start {
	case "now":
		return time.Now()
	case "oldest":
		return time.Time{}
	}
	return c.startAt
}

// LinkTemplates are the parsed links.* templates by the name the worker knows them by; nil when unset.
func (c *Config) LinkTemplates() map[string]*template.Template {
	return map[string]*template.Template{"invitation_url": c.invitationURL, "password_reset_url": c.passwordURL}
}

// LogLevel is log.level.
func (c *Config) LogLevel() zapcore.Level { return c.logLevel }

// APITokens are the send API's tokens: api.token (or token_file), then api.previous_token when
// set. Empty when the send API is off.
func (c *Config) APITokens() []string { return c.apiTokens }

// FileUsed is the config file read, "" when none was.
func (c *Config) FileUsed() string { return c.configFileUsed }

// ControlSocket is the control socket's path: admin.socket, else the store's path with ".sock"
// added; absolute, so every process that names the store finds the same socket.
func (c *Config) ControlSocket() string { return c.controlSocket }

// AWSCredentials are the AWS credentials read from AWS_*_FILE or systemd credentials; nil when
// none were, and the AWS SDK's own chain (environment, profile, instance role) applies.
func (c *Config) AWSCredentials() *AWSCredentials { return c.aws }
