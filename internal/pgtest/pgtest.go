// Package pgtest starts throwaway PostgreSQL clusters for tests and benchmarks.
//
// It uses the server binaries of an installed PostgreSQL (Debian's postgresql package puts them
// under /usr/lib/postgresql/VERSION/bin; otherwise initdb is looked up on PATH). A cluster lives
// in a fresh directory under os.TempDir(), listens on 127.0.0.1 on a free port, trusts every
// local connection, and is removed when the test ends. initdb refuses to run as root, so when the
// tests run as root the server runs as the "postgres" OS user, or "nobody" when there is none.
//
// fsync stays on, so commit latencies measured against a cluster are real ones.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNotInstalled is wrapped by StartServer's error when no PostgreSQL server binaries exist.
var ErrNotInstalled = errors.New("PostgreSQL not installed (apt-get install postgresql)")

// Superuser is the database superuser of every cluster (initdb -U); DSN connects as it.
const Superuser = "postgres"

const (
	readyTimeout = 30 * time.Second
	stopTimeout  = 30 * time.Second
	bindRetries  = 5
	logTailBytes = 4096
)

// Cluster is a running (or stopped) throwaway PostgreSQL cluster.
type Cluster struct {
	bindir  string
	root    string // removed on cleanup; owned by the server's OS user
	dataDir string
	logPath string
	cred    *syscall.Credential // nil: run as the current user
	port    int

	mu   sync.Mutex
	proc *exec.Cmd
	done chan struct{} // closed when proc has exited
	seq  atomic.Int64
}

// Start initdb's and starts a cluster on 127.0.0.1 on a free port; t.Cleanup stops it and removes
// its data directory. When no PostgreSQL binaries exist it skips the test, unless the environment
// sets REQUIRE_POSTGRES=1: then the test fails.
func Start(t testing.TB) *Cluster {
	t.Helper()
	c, cleanup, err := StartServer()
	if errors.Is(err, ErrNotInstalled) {
		if os.Getenv("REQUIRE_POSTGRES") == "1" {
			t.Fatalf("pgtest: %v, and REQUIRE_POSTGRES=1", err)
		}
		t.Skipf("pgtest: %v", err)
	}
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(cleanup)
	return c
}

// StartServer is Start for a TestMain or a command: it initdb's and starts a cluster and returns
// it with a function that stops it and removes its data directory. When no PostgreSQL binaries
// exist the error wraps ErrNotInstalled.
func StartServer() (*Cluster, func(), error) {
	bindir, err := findBindir()
	if err != nil {
		return nil, nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, nil, err
	}
	root, err := makeRoot(cred)
	if err != nil {
		return nil, nil, err
	}
	c := &Cluster{
		bindir:  bindir,
		root:    root,
		dataDir: filepath.Join(root, "data"),
		cred:    cred,
	}
	c.logPath = filepath.Join(c.dataDir, "pgtest-server.log")
	var once sync.Once
	cleanup := func() {
		once.Do(func() {
			_ = c.stop()
			_ = os.RemoveAll(c.root)
		})
	}
	if err := c.initdb(); err != nil {
		cleanup()
		return nil, nil, err
	}
	// Another process may take the port between choosing it and the postmaster binding it.
	for attempt := 1; ; attempt++ {
		c.port, err = freePort()
		if err == nil {
			err = c.start()
		}
		if err == nil {
			return c, cleanup, nil
		}
		if !errors.Is(err, errBind) || attempt == bindRetries {
			cleanup()
			return nil, nil, err
		}
	}
}

// DSN returns the URL of database db on the cluster, as the superuser.
func (c *Cluster) DSN(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(Superuser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port returns the TCP port the cluster listens on (the same across Stop and Start).
func (c *Cluster) Port() int { return c.port }

// CreateDB creates a database with a name no other CreateDB on this cluster returns and returns
// its DSN. The database goes away with the cluster.
func (c *Cluster) CreateDB(t testing.TB) string {
	t.Helper()
	dsn, err := c.NewDatabase(dbPrefix(t.Name()))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return dsn
}

// NewDatabase creates a database named prefix and a number no other call on this cluster
// returns, and returns its DSN (for benchmarks and commands, which have no testing.TB).
func (c *Cluster) NewDatabase(prefix string) (string, error) {
	name := fmt.Sprintf("%s_%d", prefix, c.seq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return c.DSN(name), nil
}

// ServerCPU is the CPU time the server has used so far: the postmaster's own and that of its
// exited children (the backends of closed connections), from /proc. 0 when it cannot tell.
func (c *Cluster) ServerCPU() time.Duration {
	c.mu.Lock()
	proc := c.proc
	c.mu.Unlock()
	if proc == nil || proc.Process == nil {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", proc.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces) in parentheses; utime is the 14th field.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return 0
	}
	var ticks int64
	for _, v := range f[11:15] { // utime stime cutime cstime
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / 100) // USER_HZ
}

// Stop shuts the server down fast (SIGINT: open transactions are rolled back, clients are
// disconnected) and waits for it to exit. The data and the port are kept for Start.
func (c *Cluster) Stop(t testing.TB) {
	t.Helper()
	if err := c.stop(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
}

// Start starts the server again after Stop, on the same data and port.
func (c *Cluster) Start(t testing.TB) {
	t.Helper()
	if err := c.start(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
}

// errBind marks a start that failed because the port was taken.
var errBind = errors.New("port in use")

func (c *Cluster) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc != nil {
		return errors.New("start: server already running")
	}
	logf, err := os.OpenFile(c.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start: server log: %w", err)
	}
	defer logf.Close() // the server has its own descriptor
	logStart, _ := logf.Seek(0, io.SeekEnd)
	cmd := c.command(filepath.Join(c.bindir, "postgres"),
		"-D", c.dataDir,
		"-p", strconv.Itoa(c.port),
		"-k", c.dataDir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=on",
		"-c", "max_connections=100",
		"-c", "logging_collector=off",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	c.proc, c.done = cmd, done

	if err := c.waitReady(done); err != nil {
		c.kill()
		tail := c.logTail(logStart)
		if strings.Contains(tail, "could not bind") || strings.Contains(tail, "already in use") {
			err = fmt.Errorf("%w: %v", errBind, err)
		}
		return fmt.Errorf("start postgres on port %d: %w\nserver log (%s):\n%s", c.port, err, c.logPath, tail)
	}
	return nil
}

// waitReady polls until the server answers SELECT 1, it exits, or readyTimeout passes.
func (c *Cluster) waitReady(exited <-chan struct{}) error {
	deadline := time.Now().Add(readyTimeout)
	dsn := c.DSN("postgres") + "&connect_timeout=2"
	var last error
	for {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		// An attempt gives up as soon as the server exits: its port may belong to someone else.
		go func() {
			select {
			case <-exited:
				cancel()
			case <-ctx.Done():
			}
		}()
		conn, err := pgx.Connect(ctx, dsn)
		if err == nil {
			var one int
			err = conn.QueryRow(ctx, "SELECT 1").Scan(&one)
			conn.Close(context.Background())
		}
		cancel()
		if err == nil {
			return nil
		}
		last = err
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %v", readyTimeout, last)
		}
		retry := time.NewTimer(20 * time.Millisecond)
		select {
		case <-exited:
			retry.Stop()
			return fmt.Errorf("postgres exited before accepting connections (last attempt: %v)", last)
		case <-retry.C:
		}
	}
}

// stop shuts the server down fast; a no-op when it is not running.
func (c *Cluster) stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return nil
	}
	_ = c.proc.Process.Signal(syscall.SIGINT)
	select {
	case <-c.done:
		c.proc, c.done = nil, nil
		return nil
	case <-time.After(stopTimeout):
	}
	c.kill()
	return fmt.Errorf("stop: postgres did not shut down within %v; killed it\nserver log (%s):\n%s", stopTimeout, c.logPath, c.logTail(0))
}

// kill ends the server at once (SIGQUIT, then SIGKILL) and waits for it. c.mu is held.
func (c *Cluster) kill() {
	if c.proc == nil {
		return
	}
	_ = c.proc.Process.Signal(syscall.SIGQUIT)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		_ = c.proc.Process.Kill()
		<-c.done
	}
	c.proc, c.done = nil, nil
}

func (c *Cluster) initdb() error {
	cmd := c.command(filepath.Join(c.bindir, "initdb"),
		"-D", c.dataDir,
		"-A", "trust",
		"-U", Superuser,
		"--no-sync",
		"-E", "UTF8",
		"--locale=C",
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("initdb %s: %w\n%s", c.dataDir, err, out.Bytes())
	}
	return nil
}

// command runs a PostgreSQL binary as the server's OS user, in the cluster's directory, with no
// PG* variables that could point it elsewhere.
func (c *Cluster) command(path string, args ...string) *exec.Cmd {
	cmd := exec.Command(path, args...)
	cmd.Dir = c.root
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "LC_ALL=C")
	cmd.SysProcAttr = sysProcAttr(c.cred)
	return cmd
}

// logTail returns the last logTailBytes of the server log from offset from on.
func (c *Cluster) logTail(from int64) string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read: %v)", err)
	}
	if from > 0 && from <= int64(len(b)) {
		b = b[from:]
	}
	if len(b) > logTailBytes {
		b = b[len(b)-logTailBytes:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	if len(b) == 0 {
		return "(empty)"
	}
	return string(b)
}

// Installed reports whether a server can be started: nil, or an error wrapping ErrNotInstalled.
func Installed() error {
	_, err := findBindir()
	return err
}

// installGlob matches the bin directories of Debian's PostgreSQL packages.
var installGlob = "/usr/lib/postgresql/*/bin"

// findBindir returns the directory of the newest installed PostgreSQL's initdb and postgres.
func findBindir() (string, error) {
	dirs, _ := filepath.Glob(installGlob)
	var found []string
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			found = append(found, d)
		}
	}
	if len(found) > 0 {
		sort.Slice(found, func(i, j int) bool {
			return versionLess(filepath.Base(filepath.Dir(found[i])), filepath.Base(filepath.Dir(found[j])))
		})
		return found[len(found)-1], nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if d := filepath.Dir(p); isExec(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", fmt.Errorf("%w: no %s/initdb, and no initdb on PATH", ErrNotInstalled, installGlob)
}

func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// versionLess orders PostgreSQL version directory names: "9.6" < "10" < "15".
func versionLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) && i < len(pb); i++ {
		na, ea := strconv.Atoi(pa[i])
		nb, eb := strconv.Atoi(pb[i])
		if ea != nil || eb != nil {
			if pa[i] != pb[i] {
				return pa[i] < pb[i]
			}
			continue
		}
		if na != nb {
			return na < nb
		}
	}
	return len(pa) < len(pb)
}

// serverCredential returns the OS user to run initdb and postgres as: nil (the current user)
// unless we are root, which initdb refuses; then "postgres", or "nobody" when there is none.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var errs []error
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			errs = append(errs, fmt.Errorf("user %s: uid %q gid %q", name, u.Uid, u.Gid))
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, fmt.Errorf("running as root, and initdb refuses to: no postgres or nobody user to run it as: %w", errors.Join(errs...))
}

// makeRoot creates the cluster's directory, readable and owned by the server's user. It goes
// under os.TempDir(), or /tmp when the server's user could not reach that.
func makeRoot(cred *syscall.Credential) (string, error) {
	base := os.TempDir()
	if cred != nil && !traversable(base) {
		base = "/tmp"
	}
	root, err := os.MkdirTemp(base, "pgtest-")
	if err != nil {
		return "", fmt.Errorf("cluster directory: %w", err)
	}
	err = os.Chmod(root, 0o755)
	if err == nil && cred != nil {
		err = os.Chown(root, int(cred.Uid), int(cred.Gid))
	}
	if err != nil {
		_ = os.RemoveAll(root)
		return "", fmt.Errorf("cluster directory: %w", err)
	}
	return root, nil
}

// traversable reports whether every directory from / to dir lets others through.
func traversable(dir string) bool {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// dbPrefix turns a test name into the start of a database name: lower case letters, digits and
// underscores, short enough to leave room for a sequence number within PostgreSQL's 63 bytes.
func dbPrefix(testName string) string {
	var b strings.Builder
	b.WriteString("t_")
	for _, r := range strings.ToLower(testName) {
		if b.Len() >= 40 {
			break
		}
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}
