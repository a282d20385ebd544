// Package config loads workos-emailer's configuration: defaults, the YAML file, the environment
// and files holding secrets, then validates every key, each error naming the key it is about.
package config

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/template"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
	"go.uber.org/zap/zapcore"

	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/worker"
)

// Config mirrors the YAML keys of CONTRACT.md.
type Config struct {
	WorkOS struct {
		APIKey       string        `mapstructure:"api_key"`
		APIKeyFile   string        `mapstructure:"api_key_file"`
		BaseURL      string        `mapstructure:"base_url"`
		PollInterval time.Duration `mapstructure:"poll_interval"`
		PageSize     int           `mapstructure:"page_size"`
		Start        string        `mapstructure:"start"`
		// MaxRequestsPerSecond is the one budget of every WorkOS call (workosapi.Budget).
		MaxRequestsPerSecond float64 `mapstructure:"max_requests_per_second"`
	} `mapstructure:"workos"`
	Store struct {
		// Driver is bolt (a file, one host) or postgres (several hosts, one leader).
		Driver    string        `mapstructure:"driver"`
		Path      string        `mapstructure:"path"`
		Retention time.Duration `mapstructure:"retention"`
		// DSN is the PostgreSQL connection string: a secret (it may hold the password).
		DSN      string        `mapstructure:"dsn"`
		DSNFile  string        `mapstructure:"dsn_file"`
		LeaseTTL time.Duration `mapstructure:"lease_ttl"`
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
			// FeedbackQueueURL is the SQS queue SES's events reach (sesfeedback); empty: off.
			FeedbackQueueURL string `mapstructure:"feedback_queue_url"`
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
		Socket string `mapstructure:"socket"`
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
		// PreviousTokenFile holds api.previous_token, like token_file.
		PreviousTokenFile string `mapstructure:"previous_token_file"`
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
	controlSocket  string
	aws            *AWSCredentials // from AWS_*_FILE or systemd credentials; nil: the SDK's chain
}

func defaults(v *viper.Viper) {
	storePath := "./workos-emailer.db"
	if dir := os.Getenv("STATE_DIRECTORY"); dir != "" {
		// systemd may pass several directories separated by colons; the first is ours.
		storePath = strings.Split(dir, ":")[0] + "/state.db"
	}
	for k, val := range map[string]any{
		"workos.api_key": "", "workos.api_key_file": "", "workos.base_url": "https://api.workos.com", "workos.poll_interval": "1s",
		"workos.page_size": 100, "workos.start": "now", "workos.max_requests_per_second": 50,
		"store.driver": StoreBolt, "store.path": storePath, "store.retention": "45d", "store.dsn": "", "store.dsn_file": "",
		"store.lease_ttl": "10s",
		"mailer.driver":   "ses", "mailer.from": "", "mailer.reply_to": "", "mailer.list_unsubscribe": "",
		"mailer.ses.region": "", "mailer.ses.endpoint": "", "mailer.ses.configuration_set": "",
		"mailer.ses.max_send_rate": 0, "mailer.ses.feedback_queue_url": "", "mailer.file.dir": "./outbox",
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
		"admin.listen": "127.0.0.1:9464", "admin.socket": "",
		"api.listen": "", "api.token": "", "api.token_file": "", "api.previous_token": "", "api.previous_token_file": "",
		"log.level": "info", "log.format": "json",
	} {
		v.SetDefault(k, val)
	}
}

// Store drivers (store.driver).
const (
	StoreBolt     = "bolt"
	StorePostgres = "postgres"
)

// Error is invalid configuration: the CLI exits with code 2.
type Error struct{ Err error }

func (e Error) Error() string { return "invalid configuration: " + e.Err.Error() }
func (e Error) Unwrap() error { return e.Err }

// KeyError is an Error about one key, named first.
func KeyError(key, format string, args ...any) error {
	return Error{fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...))}
}

// Load reads the file (explicit path, ./config.yaml, /etc/workos-emailer/config.yaml, or
// none) and the environment, then validates.
func Load(path string, explicit bool) (*Config, error) {
	return load(path, explicit, false)
}

// LoadForPreview is Load for commands that only render (render): they send nothing, so they
// need no mailer.from.
func LoadForPreview(path string, explicit bool) (*Config, error) {
	return load(path, explicit, true)
}

func load(path string, explicit, preview bool) (*Config, error) {
	v := viper.New()
	defaults(v)
	v.SetEnvPrefix("WORKOS_EMAILER")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if err := v.BindEnv("workos.api_key", "WORKOS_EMAILER_WORKOS_API_KEY", "WORKOS_API_KEY"); err != nil {
		return nil, err
	}
	if err := v.BindEnv("workos.api_key_file", "WORKOS_EMAILER_WORKOS_API_KEY_FILE", "WORKOS_API_KEY_FILE"); err != nil {
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
			return nil, Error{fmt.Errorf("read config file %s: %w", file, err)}
		}
	}
	var cfg Config
	err := v.UnmarshalExact(&cfg, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		durationWithDaysHook, mapstructure.StringToSliceHookFunc(","))))
	if err != nil {
		return nil, Error{fmt.Errorf("%s: %w%s%s", cmp.Or(file, "environment"), err, decodeHint(err), nearestKeys(err))}
	}
	cfg.configFileUsed = file
	cfg.previewOnly = preview
	if err := cfg.validate(); err != nil {
		var ce Error
		if file == "" && errors.As(err, &ce) {
			err = Error{fmt.Errorf("%w (no config file: none at ./config.yaml or /etc/workos-emailer/config.yaml, "+
				"and no --config)", ce.Err)}
		}
		return &cfg, err
	}
	return &cfg, nil
}
