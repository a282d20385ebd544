package pgtest

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestClusterSurvivesRestart(t *testing.T) {
	began := time.Now()
	c := Start(t)
	t.Logf("cluster started in %v on port %d", time.Since(began).Round(time.Millisecond), c.Port())

	dsn := c.CreateDB(t)
	if other := c.CreateDB(t); other == dsn {
		t.Fatalf("CreateDB returned %s twice", dsn)
	}
	if want := "postgres://postgres@127.0.0.1:"; !strings.HasPrefix(dsn, want) || !strings.HasSuffix(dsn, "?sslmode=disable") {
		t.Fatalf("DSN %q, want %s<port>/<db>?sslmode=disable", dsn, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (id int PRIMARY KEY, note text)"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO kept VALUES (1, 'before restart')"); err != nil {
		t.Fatal(err)
	}
	port := c.Port()

	began = time.Now()
	c.Stop(t)
	t.Logf("fast stop took %v", time.Since(began).Round(time.Millisecond))
	// The open connection was ended by the shutdown.
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("connection still answers after Stop")
	}
	conn.Close(ctx)
	if _, err := pgx.Connect(ctx, dsn); err == nil {
		t.Fatal("new connection succeeded while stopped")
	}

	began = time.Now()
	c.Start(t)
	t.Logf("restart took %v", time.Since(began).Round(time.Millisecond))
	if c.Port() != port {
		t.Fatalf("port changed across restart: %d then %d", port, c.Port())
	}
	conn, err = pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var note string
	if err := conn.QueryRow(ctx, "SELECT note FROM kept WHERE id = 1").Scan(&note); err != nil {
		t.Fatal(err)
	}
	if note != "before restart" {
		t.Fatalf("row after restart: %q", note)
	}
	var fsync string
	if err := conn.QueryRow(ctx, "SHOW fsync").Scan(&fsync); err != nil || fsync != "on" {
		t.Fatalf("fsync = %q, %v; want on", fsync, err)
	}
}

func TestStartServerCleanupRemovesData(t *testing.T) {
	c, cleanup, err := StartServer()
	if errors.Is(err, ErrNotInstalled) && os.Getenv("REQUIRE_POSTGRES") != "1" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	// Stopping twice, and cleaning up a stopped cluster, are fine.
	c.Stop(t)
	c.Stop(t)
	cleanup()
	cleanup()
	if _, err := os.Stat(c.root); !os.IsNotExist(err) {
		t.Fatalf("cluster directory %s still there after cleanup: %v", c.root, err)
	}
}

func TestVersionLess(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		less bool
	}{
		{"9.6", "10", true},
		{"10", "9.6", false},
		{"14", "15", true},
		{"15", "15", false},
		{"16", "9", false},
	} {
		if got := versionLess(tc.a, tc.b); got != tc.less {
			t.Errorf("versionLess(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.less)
		}
	}
}

func TestDBPrefix(t *testing.T) {
	got := dbPrefix("TestFoo/sub-case#01 " + strings.Repeat("x", 100))
	if !strings.HasPrefix(got, "t_testfoo_sub_case_01_") || len(got) > 40 {
		t.Fatalf("dbPrefix = %q", got)
	}
}

func TestStartFailureShowsServerLog(t *testing.T) {
	c := Start(t)
	c.Stop(t)
	// Take the cluster's port, so the postmaster cannot bind it.
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port())))
	if err != nil {
		t.Fatal(err)
	}
	err = c.start()
	l.Close()
	if !errors.Is(err, errBind) || !strings.Contains(err.Error(), "server log") || !strings.Contains(err.Error(), "could not bind") {
		t.Fatalf("start on a taken port: %v\nwant errBind with the server log's complaint", err)
	}
	t.Logf("start on a taken port: %v", err)
	c.Start(t) // the port is free again
}

func TestNotInstalled(t *testing.T) {
	saved := installGlob
	installGlob = t.TempDir() + "/*/bin"
	t.Cleanup(func() { installGlob = saved })
	t.Setenv("PATH", t.TempDir())

	_, _, err := StartServer()
	if !errors.Is(err, ErrNotInstalled) || !strings.Contains(err.Error(), "PostgreSQL not installed (apt-get install postgresql)") {
		t.Fatalf("StartServer without binaries: %v; want ErrNotInstalled", err)
	}
	t.Log(err)
}
