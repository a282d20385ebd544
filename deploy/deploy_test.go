// Package deploy holds the systemd units; its tests check them with systemd-analyze and check
// what `make install` puts where.
package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var units = []string{"workos-emailer.service", "workos-emailer@.service"}

// tool finds a command the test needs, or skips (fails under REQUIRE_E2E_TOOLS=1).
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("REQUIRE_E2E_TOOLS") == "1" {
			t.Fatalf("%s not found (Debian package %s)", name, pkg)
		}
		t.Skipf("%s not found; install the Debian package %s", name, pkg)
	}
	return path
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The units must say what the daemon relies on: notify, watchdog, state directory, secrets
// from an environment file, and the hardening.
func TestUnitsDeclareNotifyWatchdogAndHardening(t *testing.T) {
	for _, u := range units {
		text := read(t, u)
		lines := map[string]bool{}
		for _, l := range strings.Split(text, "\n") {
			lines[strings.TrimSpace(l)] = true
		}
		want := []string{"Type=notify", "NotifyAccess=main", "WatchdogSec=60", "Restart=on-failure", "DynamicUser=yes",
			"ProtectSystem=strict", "ProtectHome=yes", "NoNewPrivileges=yes", "PrivateTmp=yes", "PrivateDevices=yes",
			"ProtectKernelTunables=yes", "ProtectKernelModules=yes", "ProtectKernelLogs=yes", "ProtectControlGroups=yes",
			"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "SystemCallFilter=@system-service", "CapabilityBoundingSet=", "ExecReload=/bin/kill -HUP $MAINPID"}
		if u == "workos-emailer.service" {
			want = append(want, "StateDirectory=workos-emailer", "EnvironmentFile=-/etc/workos-emailer/env",
				"ExecStart=/usr/local/bin/workos-emailer run --config /etc/workos-emailer/config.yaml")
		} else {
			want = append(want, "StateDirectory=workos-emailer/%i", "EnvironmentFile=-/etc/workos-emailer/%i.env",
				"ExecStart=/usr/local/bin/workos-emailer run --config /etc/workos-emailer/%i.yaml")
		}
		for _, w := range want {
			if !lines[w] {
				t.Errorf("%s lacks %q", u, w)
			}
		}
	}
}

// systemd-analyze verify finds unknown keys, bad values and missing dependencies; it also needs
// ExecStart to exist, so the binary path is pointed at an executable that does.
func TestSystemdAnalyzeVerify(t *testing.T) {
	analyze := tool(t, "systemd-analyze", "systemd")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, u := range units {
		text := strings.ReplaceAll(read(t, u), "/usr/local/bin/workos-emailer", exe)
		if err := os.WriteFile(filepath.Join(dir, u), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The template is checked through an instance, as systemd would load it.
	for _, u := range []string{"workos-emailer.service", "workos-emailer@.service", "workos-emailer@prod.service"} {
		cmd := exec.Command(analyze, "verify", filepath.Join(dir, u))
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", u, err, out)
		}
	}
}

func makeInstall(t *testing.T, destdir, bin string, vars ...string) string {
	t.Helper()
	mk := tool(t, "make", "make")
	args := append([]string{"-s", "-C", "..", "install", "DESTDIR=" + destdir, "BIN=" + bin}, vars...)
	out, err := exec.Command(mk, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	return string(out)
}

func TestMakeInstall(t *testing.T) {
	dest := t.TempDir()
	bin := filepath.Join(t.TempDir(), "workos-emailer")
	makeInstall(t, dest, bin)

	for path, mode := range map[string]os.FileMode{
		"usr/local/bin/workos-emailer":                         0o755,
		"usr/local/lib/systemd/system/workos-emailer.service":  0o644,
		"usr/local/lib/systemd/system/workos-emailer@.service": 0o644,
		"usr/local/share/doc/workos-emailer/README.md":         0o644,
		"etc/workos-emailer/config.yaml":                       0o644,
	} {
		fi, err := os.Stat(filepath.Join(dest, path))
		if err != nil {
			t.Errorf("missing %s: %v", path, err)
			continue
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", path, fi.Mode().Perm(), mode)
		}
	}
	for _, u := range units {
		if got := read(t, filepath.Join(dest, "usr/local/lib/systemd/system", u)); got != read(t, u) {
			t.Errorf("installed %s differs from deploy/%s with the default PREFIX", u, u)
		}
	}
	installed := read(t, filepath.Join(dest, "etc/workos-emailer/config.yaml"))
	if want := strings.Replace(read(t, "../config.yaml"), "  # path: ./workos-emailer.db\n", "  path: /var/lib/workos-emailer/state.db\n", 1); installed != want || installed == read(t, "../config.yaml") {
		t.Error("installed config is not the sample with store.path set to the unit's StateDirectory")
	}
	out, err := exec.Command(filepath.Join(dest, "usr/local/bin/workos-emailer"), "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "workos-emailer ") {
		t.Errorf("installed binary: %v %s", err, out)
	}

	// An existing config is the operator's: install again keeps it.
	cfg := filepath.Join(dest, "etc/workos-emailer/config.yaml")
	if err := os.WriteFile(cfg, []byte("# mine\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if out := makeInstall(t, dest, bin); !strings.Contains(out, "kept existing") {
		t.Errorf("second install did not say it kept the config:\n%s", out)
	}
	if read(t, cfg) != "# mine\n" {
		t.Error("make install overwrote an existing config")
	}

	// Another PREFIX moves the binary and units, and the units point at the moved binary.
	dest2 := t.TempDir()
	makeInstall(t, dest2, bin, "PREFIX=/usr")
	unit := read(t, filepath.Join(dest2, "usr/lib/systemd/system/workos-emailer.service"))
	if !strings.Contains(unit, "ExecStart=/usr/bin/workos-emailer run --config /etc/workos-emailer/config.yaml") {
		t.Errorf("unit installed with PREFIX=/usr runs:\n%s", unit)
	}
	if _, err := os.Stat(filepath.Join(dest2, "usr/bin/workos-emailer")); err != nil {
		t.Error(err)
	}
}
