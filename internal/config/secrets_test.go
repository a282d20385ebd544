package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// isolate keeps the developer's environment and files out of a config test.
func isolate(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "WORKOS_") || strings.HasPrefix(k, "AWS_") || k == "STATE_DIRECTORY" || k == "CREDENTIALS_DIRECTORY" {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	t.Chdir(t.TempDir())
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const (
	secretKey   = "sk_live_FROMFILE_1f2e3d"
	secretToken = "tok_0123456789abcdef0123456789abcdef_SECRET"
	secretPass  = "hunter2-SECRET"
)

// Every secret can come from a *_FILE variable (or *_file key) or a systemd credential, and
// none of them is ever quoted in an error.
func TestSecretsFromFilesAndCredentials(t *testing.T) {
	yaml := "mailer:\n  driver: smtp\n  from: a@acme.test\n  smtp:\n    host: smtp.acme.test\n    username: u\napi:\n  listen: 127.0.0.1:9465\n"
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string)
	}{
		{"files", func(t *testing.T, dir string) {
			t.Setenv("WORKOS_API_KEY_FILE", writeFile(t, dir, "key", "\uFEFF"+secretKey+" \n"))
			t.Setenv("WORKOS_EMAILER_API_TOKEN_FILE", writeFile(t, dir, "token", secretToken))
			t.Setenv("WORKOS_EMAILER_MAILER_SMTP_PASSWORD_FILE", writeFile(t, dir, "pw", secretPass+"\r\n"))
			t.Setenv("AWS_ACCESS_KEY_ID_FILE", writeFile(t, dir, "akid", "AKIDFILE\n"))
			t.Setenv("AWS_SECRET_ACCESS_KEY_FILE", writeFile(t, dir, "aws", "awsSECRET\n"))
		}},
		{"systemd credentials", func(t *testing.T, dir string) {
			for name, v := range map[string]string{"workos_api_key": secretKey, "api_token": secretToken, "smtp_password": secretPass,
				"aws_access_key_id": "AKIDFILE", "aws_secret_access_key": "awsSECRET"} {
				writeFile(t, dir, name, v+"\n")
			}
			t.Setenv("CREDENTIALS_DIRECTORY", dir)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			isolate(t)
			dir := t.TempDir()
			tc.setup(t, dir)
			cfg, err := Load(writeFile(t, dir, "config.yaml", yaml), true)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.WorkOS.APIKey != secretKey || cfg.Mailer.SMTP.Password != secretPass || len(cfg.APITokens()) != 1 ||
				cfg.APITokens()[0] != secretToken {
				t.Errorf("secrets not read: key %q, password %q, tokens %d", cfg.WorkOS.APIKey, cfg.Mailer.SMTP.Password, len(cfg.APITokens()))
			}
			if a := cfg.AWSCredentials(); a == nil || a.AccessKeyID != "AKIDFILE" || a.SecretAccessKey != "awsSECRET" {
				t.Errorf("AWS credentials %+v", a)
			}
		})
	}

	// A credential fills only what is otherwise empty; the environment wins.
	isolate(t)
	dir := t.TempDir()
	writeFile(t, dir, "workos_api_key", secretKey)
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	t.Setenv("WORKOS_API_KEY", "sk_test_env")
	cfg, err := Load(writeFile(t, dir, "config.yaml", "mailer:\n  driver: log\n"), true)
	if err != nil || cfg.WorkOS.APIKey != "sk_test_env" || cfg.AWSCredentials() != nil {
		t.Errorf("key %q (%v), aws %v: want the environment's, and no AWS credentials", cfg.WorkOS.APIKey, err, cfg.AWSCredentials())
	}
}

func TestSecretFileErrorsNameTheKeyNotTheSecret(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string // "@name": a file of that name holding a secret
		want string
	}{
		{"both", map[string]string{"WORKOS_API_KEY": secretKey, "WORKOS_API_KEY_FILE": "@key"}, "workos.api_key_file: set workos.api_key (WORKOS_API_KEY) or workos.api_key_file, not both"},
		{"missing", map[string]string{"WORKOS_API_KEY_FILE": "/nonexistent/workos-key"}, "workos.api_key_file: cannot read /nonexistent/workos-key: no such file"},
		{"the secret in the file variable", map[string]string{"WORKOS_API_KEY_FILE": secretKey}, "workos.api_key_file: cannot read the file it names (no such file or directory); it must be the path"},
		{"AWS mixed", map[string]string{"AWS_ACCESS_KEY_ID_FILE": "@key", "AWS_SECRET_ACCESS_KEY_FILE": "@key", "AWS_SESSION_TOKEN": secretPass}, "AWS_SESSION_TOKEN is set directly"},
		{"empty", map[string]string{"WORKOS_EMAILER_API_TOKEN_FILE": "@empty"}, "api.token_file: "},
		{"half of AWS", map[string]string{"AWS_ACCESS_KEY_ID_FILE": "@key"}, "need both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"},
		{"AWS both", map[string]string{"AWS_SECRET_ACCESS_KEY": secretPass, "AWS_SECRET_ACCESS_KEY_FILE": "@key"}, "set AWS_SECRET_ACCESS_KEY or AWS_SECRET_ACCESS_KEY_FILE, not both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			isolate(t)
			dir := t.TempDir()
			for k, v := range tc.env {
				switch v {
				case "@key":
					v = writeFile(t, dir, "key", secretKey)
				case "@empty":
					v = writeFile(t, dir, "empty", "\n")
				}
				t.Setenv(k, v)
			}
			_, err := Load(writeFile(t, dir, "config.yaml", "mailer:\n  driver: log\n"), true)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			for _, s := range []string{secretKey, secretPass} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("the error quotes a secret: %v", err)
				}
			}
		})
	}
}
