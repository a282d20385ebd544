package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Secrets come from the environment or the config file as their key, from a file a *_file key
// names (a path, e.g. a mounted secret), or from a systemd credential (LoadCredential=, read
// from $CREDENTIALS_DIRECTORY/NAME): whichever is set, and at most one of the first two. A
// credential fills only a secret that is otherwise empty, so a unit can hand over each secret
// without an environment file. Files are read again on every load: a reload picks up a rotated
// key. No error quotes a secret, only its key and the file's path.

// secret is one secret setting: where its value, its file and its credential are.
type secret struct {
	key, fileKey string // "workos.api_key", "workos.api_key_file"
	env          string // the variable operators know it by
	credential   string // systemd credential name
	value        func(*Config) *string
	file         func(*Config) string
}

var secrets = []secret{
	{"workos.api_key", "workos.api_key_file", "WORKOS_API_KEY", "workos_api_key",
		func(c *Config) *string { return &c.WorkOS.APIKey }, func(c *Config) string { return c.WorkOS.APIKeyFile }},
	{"api.token", "api.token_file", "WORKOS_EMAILER_API_TOKEN", "api_token",
		func(c *Config) *string { return &c.API.Token }, func(c *Config) string { return c.API.TokenFile }},
	{"api.previous_token", "api.previous_token_file", "WORKOS_EMAILER_API_PREVIOUS_TOKEN", "api_previous_token",
		func(c *Config) *string { return &c.API.PreviousToken }, func(c *Config) string { return c.API.PreviousTokenFile }},
	{"store.dsn", "store.dsn_file", "WORKOS_EMAILER_STORE_DSN", "store_dsn",
		func(c *Config) *string { return &c.Store.DSN }, func(c *Config) string { return c.Store.DSNFile }},
	{"mailer.smtp.password", "mailer.smtp.password_file", "WORKOS_EMAILER_MAILER_SMTP_PASSWORD", "smtp_password",
		func(c *Config) *string { return &c.Mailer.SMTP.Password }, func(c *Config) string { return c.Mailer.SMTP.PasswordFile }},
}

// awsSecrets are the AWS SDK's own variables. Set directly they go to the SDK's credential
// chain untouched; from AWS_*_FILE or a credential they become static credentials for SES.
var awsSecrets = []struct{ env, credential string }{
	{"AWS_ACCESS_KEY_ID", "aws_access_key_id"},
	{"AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"},
	{"AWS_SESSION_TOKEN", "aws_session_token"},
}

// resolveSecrets fills each secret from its file or credential.
func (c *Config) resolveSecrets() error {
	creds := os.Getenv("CREDENTIALS_DIRECTORY")
	for _, s := range secrets {
		v, file := s.value(c), s.file(c)
		switch {
		case *v != "" && file != "":
			return KeyError(s.fileKey, "set %s (%s) or %s, not both", s.key, s.env, s.fileKey)
		case file != "":
			b, err := readSecret(file)
			if err != nil {
				return KeyError(s.fileKey, "%v", err)
			}
			*v = b
		case *v == "" && creds != "":
			b, ok, err := readCredential(creds, s.credential)
			if err != nil {
				return KeyError(s.key, "systemd credential %s: %v", s.credential, err)
			}
			if ok {
				*v = b
			}
		}
	}
	found := map[string]string{}
	for _, a := range awsSecrets {
		file := os.Getenv(a.env + "_FILE")
		switch {
		case file != "" && os.Getenv(a.env) != "":
			return Error{Err: fmt.Errorf("set %s or %s_FILE, not both", a.env, a.env)}
		case file != "":
			b, err := readSecret(file)
			if err != nil {
				return Error{Err: fmt.Errorf("%s_FILE: %w", a.env, err)}
			}
			found[a.env] = b
		case os.Getenv(a.env) == "" && creds != "":
			b, ok, err := readCredential(creds, a.credential)
			if err != nil {
				return Error{Err: fmt.Errorf("systemd credential %s: %w", a.credential, err)}
			}
			if ok {
				found[a.env] = b
			}
		}
	}
	if len(found) > 0 {
		for _, a := range awsSecrets {
			if os.Getenv(a.env) != "" {
				// The static credentials built from the files would override it unseen.
				return Error{Err: fmt.Errorf("%s is set directly while other AWS credentials come from files or credentials: "+
					"give all of them the same way", a.env)}
			}
		}
		if found["AWS_ACCESS_KEY_ID"] == "" || found["AWS_SECRET_ACCESS_KEY"] == "" {
			return Error{Err: fmt.Errorf("AWS credentials from files need both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY " +
				"(as *_FILE variables or systemd credentials aws_access_key_id and aws_secret_access_key)")}
		}
		c.aws = &AWSCredentials{AccessKeyID: found["AWS_ACCESS_KEY_ID"], SecretAccessKey: found["AWS_SECRET_ACCESS_KEY"],
			SessionToken: found["AWS_SESSION_TOKEN"]}
	}
	return nil
}

// AWSCredentials are static AWS credentials read from files.
type AWSCredentials struct {
	AccessKeyID, SecretAccessKey, SessionToken string
}

// readSecret reads a secret file: its content less the white space and byte order mark editors
// add around it (no secret here begins or ends with a space).
func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		cause := err
		var pe *fs.PathError
		if errors.As(err, &pe) {
			cause = pe.Err // the path is named below, or on purpose not
		}
		if !strings.Contains(path, "/") {
			// Perhaps the secret itself, put where its file's path belongs: echoing it would
			// log the secret.
			return "", fmt.Errorf("cannot read the file it names (%w); it must be the path of a file holding the secret, "+
				"not the secret", cause)
		}
		return "", fmt.Errorf("cannot read %s: %w", path, cause)
	}
	v := strings.TrimSpace(strings.TrimPrefix(string(b), "\uFEFF"))
	if v == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return v, nil
}

// readCredential reads $CREDENTIALS_DIRECTORY/name when the unit passed it; ok is false when not.
func readCredential(dir, name string) (string, bool, error) {
	path := filepath.Join(dir, name)
	if _, err := os.Stat(path); os.IsNotExist(err) {
		return "", false, nil
	}
	v, err := readSecret(path)
	return v, err == nil, err
}
