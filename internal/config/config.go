package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
	"go.uber.org/zap/zapcore"

	"github.com/workos-emailer/workos-emailer/internal/failpoint"
	"github.com/workos-emailer/workos-emailer/internal/urlpolicy"
	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/sendapi"
	"github.com/workos-emailer/workos-emailer/worker"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

// Config mirrors the YAML keys of CONTRACT.md.
type Config struct {
	WorkOS struct {
		APIKey       string        `mapstructure:"api_key"`
		BaseURL      string        `mapstructure:"base_url"`
		PollInterval time.Duration `mapstructure:"poll_interval"`
		PageSize     int           `mapstructure:"page_size"`
		Start        string        `mapstructure:"start"`
		// MaxRequestsPerSecond is the one budget of every WorkOS call (workosapi.Budget).
		MaxRequestsPerSecond float64 `mapstructure:"max_requests_per_second"`
	} `mapstructure:"workos"`
	Store struct {
		Path      string        `mapstructure:"path"`
		Retention time.Duration `mapstructure:"retention"`
	} `mapstructure:"store"`
	Mailer struct {
		Driver          string `mapstructure:"driver"`
		From            string `mapstructure:"from"`
		ReplyTo         string `mapstructure:"reply_to"`
		ListUnsubscribe string `mapstructure:"list_unsubscribe"`
		SES             struct {
			Region           string  `mapstructure:"region"`
			Endpoint         string  `mapstructure:"endpoint"`
			ConfigurationSet string  `mapstructure:"configuration_set"`
			MaxSendRate      float64 `mapstructure:"max_send_rate"`
		} `mapstructure:"ses"`
		File struct {
			Dir string `mapstructure:"dir"`
		} `mapstructure:"file"`
		SMTP struct {
			Host         string  `mapstructure:"host"`
			Port         int     `mapstructure:"port"`
			Username     string  `mapstructure:"username"`
			Password     string  `mapstructure:"password"`
			PasswordFile string  `mapstructure:"password_file"`
			TLS          string  `mapstructure:"tls"`
			MaxSendRate  float64 `mapstructure:"max_send_rate"`
		} `mapstructure:"smtp"`
	} `mapstructure:"mailer"`
	Delivery struct {
		Concurrency int           `mapstructure:"concurrency"`
		MaxAttempts int           `mapstructure:"max_attempts"`
		MaxEventAge time.Duration `mapstructure:"max_event_age"`
		OnAmbiguous string        `mapstructure:"on_ambiguous"`
	} `mapstructure:"delivery"`
	Events struct {
		Enabled []string `mapstructure:"enabled"`
	} `mapstructure:"events"`
	Templates struct {
		Dir           string            `mapstructure:"dir"`
		DefaultLocale string            `mapstructure:"default_locale"`
		OrgLocales    map[string]string `mapstructure:"org_locales"`
		TimeZone      string            `mapstructure:"time_zone"`
		UserLocaleKey string            `mapstructure:"user_locale_key"`
	} `mapstructure:"templates"`
	Links struct {
		InvitationURL    string `mapstructure:"invitation_url"`
		PasswordResetURL string `mapstructure:"password_reset_url"`
		AppURL           string `mapstructure:"app_url"`
	} `mapstructure:"links"`
	Brand struct {
		Name         string `mapstructure:"name"`
		LogoURL      string `mapstructure:"logo_url"`
		PrimaryColor string `mapstructure:"primary_color"`
		SupportEmail string `mapstructure:"support_email"`
	} `mapstructure:"brand"`
	Admin struct {
		Listen string `mapstructure:"listen"`
	} `mapstructure:"admin"`
	// Organizations are each organization's own settings: the locale its emails are written in
	// (as templates.org_locales, which still works) and its sender.
	Organizations map[string]struct {
		Locale           string `mapstructure:"locale"`
		From             string `mapstructure:"from"`
		ReplyTo          string `mapstructure:"reply_to"`
		ConfigurationSet string `mapstructure:"configuration_set"`
	} `mapstructure:"organizations"`
	API struct {
		Listen        string `mapstructure:"listen"`
		Token         string `mapstructure:"token"`
		TokenFile     string `mapstructure:"token_file"`
		PreviousToken string `mapstructure:"previous_token"`
	} `mapstructure:"api"`
	Log struct {
		Level  string `mapstructure:"level"`
		Format string `mapstructure:"format"`
	} `mapstructure:"log"`

	// Derived by validate.
	startAt        time.Time
	invitationURL  *template.Template
	passwordURL    *template.Template
	timeZone       *time.Location
	previewOnly    bool // loaded for render: nothing is sent
	logLevel       zapcore.Level
	apiTokens      []string // api.token (or token_file), then api.previous_token when set
	senders        map[string]mailer.Sender
	configFileUsed string
}

func defaults(v *viper.Viper) {
	storePath := "./workos-emailer.db"
	if dir := os.Getenv("STATE_DIRECTORY"); dir != "" {
		// systemd may pass several directories separated by colons; the first is ours.
		storePath = strings.Split(dir, ":")[0] + "/state.db"
	}
	for k, val := range map[string]any{
		"workos.api_key": "", "workos.base_url": "https://api.workos.com", "workos.poll_interval": "1s",
		"workos.page_size": 100, "workos.start": "now", "workos.max_requests_per_second": 50,
		"store.path": storePath, "store.retention": "45d",
		"mailer.driver": "ses", "mailer.from": "", "mailer.reply_to": "", "mailer.list_unsubscribe": "",
		"mailer.ses.region": "", "mailer.ses.endpoint": "", "mailer.ses.configuration_set": "",
		"mailer.ses.max_send_rate": 0, "mailer.file.dir": "./outbox",
		"mailer.smtp.host": "", "mailer.smtp.port": 587, "mailer.smtp.username": "", "mailer.smtp.password": "",
		"mailer.smtp.password_file": "", "mailer.smtp.tls": mailer.SMTPStartTLS, "mailer.smtp.max_send_rate": 0,
		"delivery.concurrency": worker.DefaultConcurrency, "delivery.max_attempts": 10, "delivery.max_event_age": "0s",
		"delivery.on_ambiguous": worker.OnAmbiguousHold,
		"events.enabled":        kinds.Defaults(),
		"organizations":         map[string]any{},
		"templates.dir":         "", "templates.default_locale": "en", "templates.org_locales": map[string]string{},
		"templates.time_zone": "UTC", "templates.user_locale_key": "",
		"links.invitation_url": "", "links.password_reset_url": "", "links.app_url": "",
		"brand.name": "", "brand.logo_url": "", "brand.primary_color": "", "brand.support_email": "",
		"admin.listen": "127.0.0.1:9464",
		"api.listen":   "", "api.token": "", "api.token_file": "", "api.previous_token": "",
		"log.level": "info", "log.format": "json",
	} {
		v.SetDefault(k, val)
	}
}

// configError is invalid configuration: exit code 2.
type configError struct{ err error }

func (e configError) Error() string { return "invalid configuration: " + e.err.Error() }
func (e configError) Unwrap() error { return e.err }

func keyErr(key, format string, args ...any) error {
	return configError{fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...))}
}

// loadConfig reads the file (explicit path, ./config.yaml, /etc/workos-emailer/config.yaml, or
// none) and the environment, then validates.
func loadConfig(path string, explicit bool) (*Config, error) {
	return loadConfigFor(path, explicit, false)
}

// loadConfigFor is loadConfig; preview is for commands that only render (render): they send
// nothing, so they need no mailer.from.
func loadConfigFor(path string, explicit, preview bool) (*Config, error) {
	v := viper.New()
	defaults(v)
	v.SetEnvPrefix("WORKOS_EMAILER")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if err := v.BindEnv("workos.api_key", "WORKOS_EMAILER_WORKOS_API_KEY", "WORKOS_API_KEY"); err != nil {
		return nil, err
	}
	if err := checkEnvironment(v); err != nil {
		return nil, err
	}
	file := ""
	if explicit {
		file = path
	} else {
		for _, candidate := range []string{"./config.yaml", "/etc/workos-emailer/config.yaml"} {
			if _, err := os.Stat(candidate); err == nil {
				file = candidate
				break
			}
		}
	}
	if file != "" {
		v.SetConfigFile(file)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return nil, configError{fmt.Errorf("read config file %s: %w", file, err)}
		}
	}
	var cfg Config
	err := v.UnmarshalExact(&cfg, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		durationWithDaysHook, mapstructure.StringToSliceHookFunc(","))))
	if err != nil {
		return nil, configError{fmt.Errorf("%s: %w%s%s", orDefault(file, "environment"), err, decodeHint(err), nearestKeys(err))}
	}
	cfg.configFileUsed = file
	cfg.previewOnly = preview
	if err := cfg.validate(); err != nil {
		var ce configError
		if file == "" && errors.As(err, &ce) {
			err = configError{fmt.Errorf("%w (no config file: none at ./config.yaml or /etc/workos-emailer/config.yaml, "+
				"and no --config)", ce.err)}
		}
		return &cfg, err
	}
	return &cfg, nil
}

// checkEnvironment refuses a WORKOS_EMAILER_* variable that names no key, as UnmarshalExact
// refuses an unknown YAML key: a misspelt one would otherwise be ignored without a word.
func checkEnvironment(v *viper.Viper) error {
	known := map[string]string{}
	for _, key := range v.AllKeys() {
		known["WORKOS_EMAILER_"+strings.ToUpper(strings.ReplaceAll(key, ".", "_"))] = key
	}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		// The failpoint switch exists only in test builds (internal/failpoint).
		if !strings.HasPrefix(name, "WORKOS_EMAILER_") || failpoint.IsEnv(name) {
			continue
		}
		if _, ok := known[name]; ok {
			continue
		}
		best, bestDist := "", 1<<30
		for env := range known {
			if d := editDistance(name, env); d < bestDist || d == bestDist && env < best {
				best, bestDist = env, d
			}
		}
		hint := ""
		if bestDist <= 4 {
			hint = fmt.Sprintf("; did you mean %s (%s)?", best, known[best])
		}
		return configError{fmt.Errorf("environment variable %s names no configuration key%s", name, hint)}
	}
	return nil
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

var invalidKeys = regexp.MustCompile(`'([a-z0-9_.]*)' has invalid keys: ([^\n]+)`)

// nearestKeys suggests, for each unknown key UnmarshalExact names, the known key nearest to it.
func nearestKeys(err error) string {
	v := viper.New() // the keys that exist, not those the file has
	defaults(v)
	var hints []string
	for _, m := range invalidKeys.FindAllStringSubmatch(err.Error(), -1) {
		for _, k := range strings.Split(m[2], ", ") {
			full := strings.TrimPrefix(m[1]+"."+strings.TrimSpace(k), ".")
			best, bestDist := "", 1<<30
			for _, known := range v.AllKeys() {
				if d := editDistance(full, known); d < bestDist || d == bestDist && known < best {
					best, bestDist = known, d
				}
			}
			if bestDist <= 4 {
				hints = append(hints, fmt.Sprintf("%s: did you mean %s?", full, best))
			}
		}
	}
	if len(hints) == 0 {
		return ""
	}
	return " (" + strings.Join(hints, "; ") + ")"
}

// decodeHint explains the decoding errors YAML's own types cause: an unquoted date, which YAML
// reads as a time rather than text.
func decodeHint(err error) string {
	if strings.Contains(err.Error(), "time.Time") || strings.Contains(err.Error(), "workos.start") && strings.Contains(err.Error(), "expected type 'string'") {
		return ` (quote the time, e.g. start: "2026-11-01T00:00:00Z": unquoted, YAML reads it as a date, not text)`
	}
	return ""
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

var daysPrefix = regexp.MustCompile(`^(\d+)d(.*)$`)

// parseDuration accepts Go durations plus a leading day count, e.g. "45d" or "1d12h".
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if m := daysPrefix.FindStringSubmatch(s); m != nil {
		days, err := strconv.Atoi(m[1])
		if err != nil || days > 100000 {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		d := time.Duration(days) * 24 * time.Hour
		if m[2] != "" {
			rest, err := time.ParseDuration(m[2])
			if err != nil {
				return 0, fmt.Errorf("invalid duration %q", s)
			}
			d += rest
		}
		return d, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (use Go syntax like 90s, 10m, 12h, or days like 45d)", s)
	}
	return d, nil
}

func durationWithDaysHook(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeOf(time.Duration(0)) {
		return data, nil
	}
	switch from.Kind() {
	case reflect.String:
		return parseDuration(data.(string))
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16,
		reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		// A bare number would be nanoseconds: poll_interval: 1 would poll WorkOS thousands of
		// times a second.
		if reflect.ValueOf(data).IsZero() {
			return time.Duration(0), nil
		}
		return nil, fmt.Errorf("%v has no unit; write it with one, e.g. %vs, %vm or %vd", data, data, data, data)
	}
	return data, nil
}

var hexColor = regexp.MustCompile(`^#([0-9A-Fa-f]{3}|[0-9A-Fa-f]{6})$`)

// validate checks every key and fills the derived fields. Errors name the key.
func (c *Config) validate() error {
	var err error
	// Every request carries the API key: over plain http it would cross the network in clear.
	if err := urlpolicy.Check(c.WorkOS.BaseURL); err != nil {
		return keyErr("workos.base_url", "%v, got %q: the API key travels with every request", err, c.WorkOS.BaseURL)
	}
	if c.WorkOS.PollInterval <= 0 {
		return keyErr("workos.poll_interval", "must be positive")
	}
	if !(c.WorkOS.MaxRequestsPerSecond > 0) || c.WorkOS.MaxRequestsPerSecond > 10000 {
		return keyErr("workos.max_requests_per_second", "must be more than 0 and at most 10000, got %v (WorkOS allows "+
			"1,000 user-management reads per 10 s per environment, and the app shares them)", c.WorkOS.MaxRequestsPerSecond)
	}
	if c.WorkOS.PageSize < 1 || c.WorkOS.PageSize > 100 {
		return keyErr("workos.page_size", "must be between 1 and 100, got %d", c.WorkOS.PageSize)
	}
	switch c.WorkOS.Start {
	case "now", "oldest":
	default:
		t, err := time.Parse(time.RFC3339, c.WorkOS.Start)
		if err != nil {
			return keyErr("workos.start", "must be now, oldest or an RFC 3339 time, got %q", c.WorkOS.Start)
		}
		c.startAt = t
	}
	if c.Store.Path == "" {
		return keyErr("store.path", "must not be empty")
	}
	if c.Store.Retention < worker.MinRetention {
		return keyErr("store.retention", "must be at least 31d, got %s: WorkOS lists events for about 30 days, and a "+
			"record pruned while its event can still be listed would let a restart or backfill send that email again",
			c.Store.Retention)
	}
	switch c.Mailer.Driver {
	case "ses":
		if c.Mailer.From == "" && !c.previewOnly {
			return keyErr("mailer.from", "is required for the ses driver, e.g. \"Acme <no-reply@acme.com>\"")
		}
		if c.Mailer.SES.Endpoint != "" {
			if u, err := url.Parse(c.Mailer.SES.Endpoint); err != nil || u.Host == "" {
				return keyErr("mailer.ses.endpoint", "must be a URL, got %q", c.Mailer.SES.Endpoint)
			}
		}
	case "file":
		if c.Mailer.File.Dir == "" {
			return keyErr("mailer.file.dir", "must not be empty")
		}
	case "smtp":
		if err := c.validateSMTP(); err != nil {
			return err
		}
	case "log":
	default:
		return keyErr("mailer.driver", "must be ses, smtp, file or log, got %q", c.Mailer.Driver)
	}
	if c.Mailer.From == "" {
		c.Mailer.From = "workos-emailer <no-reply@localhost>"
	}
	if _, err := mailer.ParseSender(c.Mailer.From); err != nil {
		return keyErr("mailer.from", "%v", err)
	}
	if c.Mailer.ReplyTo != "" {
		if _, err := mailer.ParseSender(c.Mailer.ReplyTo); err != nil {
			return keyErr("mailer.reply_to", "%v", err)
		}
	}
	if c.Mailer.ListUnsubscribe != "" {
		if err := mailer.CheckListUnsubscribe(c.Mailer.ListUnsubscribe); err != nil {
			return keyErr("mailer.list_unsubscribe", "%v", err)
		}
	}
	if c.Mailer.SES.MaxSendRate < 0 {
		return keyErr("mailer.ses.max_send_rate", "must not be negative")
	}
	if c.Delivery.Concurrency < 1 || c.Delivery.Concurrency > 256 {
		return keyErr("delivery.concurrency", "must be between 1 and 256, got %d", c.Delivery.Concurrency)
	}
	if c.Delivery.MaxAttempts < 1 {
		return keyErr("delivery.max_attempts", "must be at least 1")
	}
	if c.Delivery.MaxEventAge < 0 {
		return keyErr("delivery.max_event_age", "must not be negative")
	}
	if c.Delivery.OnAmbiguous != worker.OnAmbiguousHold && c.Delivery.OnAmbiguous != worker.OnAmbiguousResend {
		return keyErr("delivery.on_ambiguous", "must be hold or resend, got %q", c.Delivery.OnAmbiguous)
	}
	if len(c.Events.Enabled) == 0 {
		return keyErr("events.enabled", "must name at least one kind")
	}
	for _, k := range c.Events.Enabled {
		if !slices.Contains(kinds.Names(), k) {
			return keyErr("events.enabled", "unknown kind %q (kinds: %s)", k, strings.Join(kinds.Names(), ", "))
		}
	}
	if c.timeZone, err = time.LoadLocation(c.Templates.TimeZone); err != nil || c.Templates.TimeZone == "" {
		return keyErr("templates.time_zone", "must be an IANA time zone like UTC or Europe/Berlin, got %q", c.Templates.TimeZone)
	}
	if strings.ContainsAny(c.Templates.UserLocaleKey, " \r\n") {
		return keyErr("templates.user_locale_key", "must be a metadata key, got %q", c.Templates.UserLocaleKey)
	}
	if c.Links.AppURL != "" {
		if err := urlpolicy.Check(c.Links.AppURL); err != nil {
			return keyErr("links.app_url", "%v", err)
		}
	}
	if c.invitationURL, err = linkTemplate("links.invitation_url", c.Links.InvitationURL); err != nil {
		return err
	}
	if c.passwordURL, err = linkTemplate("links.password_reset_url", c.Links.PasswordResetURL); err != nil {
		return err
	}
	if c.Brand.LogoURL != "" {
		if err := urlpolicy.Check(c.Brand.LogoURL); err != nil {
			return keyErr("brand.logo_url", "%v", err)
		}
	}
	if c.Brand.PrimaryColor != "" && !hexColor.MatchString(c.Brand.PrimaryColor) {
		return keyErr("brand.primary_color", "must be a hex color like #4f46e5, got %q", c.Brand.PrimaryColor)
	}
	if c.Brand.SupportEmail != "" {
		if _, err := mailer.ParseRecipient(c.Brand.SupportEmail); err != nil {
			return keyErr("brand.support_email", "%v", err)
		}
	}
	if strings.ContainsAny(c.Brand.Name, "\r\n") {
		return keyErr("brand.name", "must be one line")
	}
	if c.Brand.Name == "" {
		c.Brand.Name = brandFromSender(c.Mailer.From)
	}
	if c.Admin.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Admin.Listen); err != nil {
			return keyErr("admin.listen", "must be host:port, got %q", c.Admin.Listen)
		}
	}
	if err := c.validateAPI(); err != nil {
		return err
	}
	if err := c.validateOrganizations(); err != nil {
		return err
	}
	if c.logLevel, err = zapcore.ParseLevel(c.Log.Level); err != nil {
		return keyErr("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	if c.Log.Format != "json" && c.Log.Format != "console" {
		return keyErr("log.format", "must be json or console, got %q", c.Log.Format)
	}
	return nil
}

// validateSMTP checks mailer.smtp.* and mailer.from for the smtp driver; the password comes
// from the environment or a file, and no error echoes it.
func (c *Config) validateSMTP() error {
	s := &c.Mailer.SMTP
	switch {
	case c.Mailer.From == "" && !c.previewOnly:
		return keyErr("mailer.from", "is required for the smtp driver, e.g. \"Acme <no-reply@acme.com>\"")
	case s.Host == "" && !c.previewOnly:
		return keyErr("mailer.smtp.host", "is required for the smtp driver")
	case s.Port < 1 || s.Port > 65535:
		return keyErr("mailer.smtp.port", "must be a port number, got %d", s.Port)
	case s.MaxSendRate < 0:
		return keyErr("mailer.smtp.max_send_rate", "must not be negative")
	case s.Password != "" && s.PasswordFile != "":
		return keyErr("mailer.smtp.password_file", "set mailer.smtp.password (WORKOS_EMAILER_MAILER_SMTP_PASSWORD) or password_file, not both")
	}
	switch s.TLS {
	case mailer.SMTPStartTLS, mailer.SMTPImplicit:
	case mailer.SMTPNoTLS:
		if s.Host != "" && !urlpolicy.Loopback(s.Host) {
			return keyErr("mailer.smtp.tls", "none sends the password and every code in clear: only for a relay on loopback, not %s", s.Host)
		}
	default:
		return keyErr("mailer.smtp.tls", "must be starttls, implicit or none, got %q", s.TLS)
	}
	if s.PasswordFile != "" {
		b, err := os.ReadFile(s.PasswordFile)
		if err != nil {
			return keyErr("mailer.smtp.password_file", "%v", err)
		}
		s.Password = strings.TrimRight(string(b), "\r\n")
	}
	if s.Password != "" && s.Username == "" {
		return keyErr("mailer.smtp.username", "is required with a password")
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
			return keyErr(key, "is not a WorkOS organization id (org_...)")
		}
		for _, a := range []struct{ name, value string }{{"from", o.From}, {"reply_to", o.ReplyTo}} {
			if a.value == "" {
				continue
			}
			if _, err := mailer.ParseSender(a.value); err != nil {
				return keyErr(key+"."+a.name, "%v", err)
			}
		}
		if strings.ContainsAny(o.ConfigurationSet, " \r\n") {
			return keyErr(key+".configuration_set", "must be an SES configuration set name")
		}
		if o.Locale != "" {
			if other, ok := c.Templates.OrgLocales[id]; ok && other != o.Locale {
				return keyErr(key+".locale", "is %q, but templates.org_locales says %q: keep one", o.Locale, other)
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
				return keyErr("events.enabled", "%s is sent when the app asks through the send API: set api.listen and api.token instead", k)
			}
		}
		return nil
	}
	if _, _, err := net.SplitHostPort(c.API.Listen); err != nil {
		return keyErr("api.listen", "must be host:port, got %q", c.API.Listen)
	}
	if c.API.Listen == c.Admin.Listen {
		return keyErr("api.listen", "must differ from admin.listen (%s): the admin listener stays loopback-only", c.Admin.Listen)
	}
	token := c.API.Token
	if c.API.TokenFile != "" {
		if token != "" {
			return keyErr("api.token_file", "set api.token or api.token_file, not both")
		}
		b, err := os.ReadFile(c.API.TokenFile)
		if err != nil {
			return keyErr("api.token_file", "%v", err)
		}
		token = strings.TrimRight(string(b), "\r\n")
	}
	for _, t := range []struct{ key, value string }{{"api.token", token}, {"api.previous_token", c.API.PreviousToken}} {
		switch {
		case t.value == "" && t.key == "api.token":
			return keyErr("api.token", "is required when api.listen is set: set WORKOS_EMAILER_API_TOKEN or api.token_file "+
				"(e.g. from openssl rand -hex 32)")
		case t.value != "" && (len(t.value) < sendapi.MinTokenLen || strings.ContainsAny(t.value, " \t\r\n")):
			return keyErr(t.key, "must be at least %d characters without spaces (e.g. openssl rand -hex 32)", sendapi.MinTokenLen)
		}
	}
	if token == c.API.PreviousToken {
		return keyErr("api.previous_token", "is the same as api.token; during a rotation it holds the old token")
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

// templateOptions is the templates.*, brand.* part of the configuration.
func (c *Config) templateOptions() mailer.TemplateOptions {
	return mailer.TemplateOptions{
		Dir: c.Templates.Dir, DefaultLocale: c.Templates.DefaultLocale, OrgLocales: c.Templates.OrgLocales, Senders: c.senders,
		TimeZone: c.timeZone,
		Brand: mailer.Brand{Name: c.Brand.Name, LogoURL: c.Brand.LogoURL,
			PrimaryColor: c.Brand.PrimaryColor, SupportEmail: c.Brand.SupportEmail},
	}
}

// loadTemplates parses and tries every template at start: a broken one is invalid
// configuration (exit 2), its message naming the file and line.
func (c *Config) loadTemplates() (*mailer.Templates, error) {
	t, err := mailer.LoadTemplates(c.templateOptions())
	if err != nil {
		return nil, configError{fmt.Errorf("templates: %w", err)}
	}
	return t, nil
}

// requireAPIKey is checked only by commands that talk to WorkOS.
func (c *Config) requireAPIKey() error {
	if c.WorkOS.APIKey == "" {
		return keyErr("workos.api_key", "is required: set WORKOS_API_KEY (or workos.api_key in the config file)")
	}
	return nil
}

// linkTemplate parses a links.* template and checks it with a sample token.
func linkTemplate(key, s string) (*template.Template, error) {
	if s == "" {
		return nil, nil
	}
	t, err := template.New(key).Option("missingkey=error").Parse(s)
	if err != nil {
		return nil, keyErr(key, "%v", err)
	}
	var b strings.Builder
	if err := t.Execute(&b, struct{ Token string }{"sample-token"}); err != nil {
		return nil, keyErr(key, "%v", err)
	}
	if !strings.Contains(b.String(), "sample-token") {
		return nil, keyErr(key, "must contain {{.Token}}")
	}
	if err := urlpolicy.Check(b.String()); err != nil {
		return nil, keyErr(key, "%v", err)
	}
	return t, nil
}

// startSince is where a store without a cursor begins: now, the oldest event (zero), or a time.
func startSince(c *Config) time.Time {
	switch c.WorkOS.Start {
	case "now":
		return time.Now()
	case "oldest":
		return time.Time{}
	}
	return c.startAt
}
