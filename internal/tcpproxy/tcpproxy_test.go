package tcpproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// promptly bounds how long a connection may take to notice a cut, or to deliver bytes.
const promptly = 5 * time.Second

// quiet is how long a blackholed connection must stay silent to count as partitioned.
const quiet = 300 * time.Millisecond

// echoServer accepts connections and echoes each until its client half-closes.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().String()
}

func listen(t *testing.T) *Proxy {
	t.Helper()
	p, err := Listen(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), promptly)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and wants it echoed back within promptly.
func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	expectEcho(t, c, msg)
}

func expectEcho(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(promptly))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read echo of %q: %v (got %q)", msg, err, got)
	}
	if string(got) != msg {
		t.Fatalf("echo %q, want %q", got, msg)
	}
}

// expectDead wants c's next read to fail (EOF or reset) well before promptly, not to time out.
func expectDead(t *testing.T, c net.Conn) {
	t.Helper()
	began := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(promptly))
	n, err := c.Read(make([]byte, 64))
	if err == nil {
		t.Fatalf("read %d bytes from a cut connection", n)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("cut connection still open after %v", promptly)
	}
	t.Logf("cut connection's read failed after %v: %v", time.Since(began).Round(time.Microsecond), err)
}

// expectRefused wants a new connection through p to be closed at once: its dial may already see
// the reset (the proxy accepts and resets it before connect returns on loopback), or its first
// read does.
func expectRefused(t *testing.T, p *Proxy) {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), promptly)
	if err != nil {
		t.Logf("dial during cut failed: %v", err)
		return
	}
	defer c.Close()
	expectDead(t, c)
}

// expectSilent wants nothing to arrive on c for quiet.
func expectSilent(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(quiet))
	n, err := c.Read(make([]byte, 64))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("blackholed connection: read %d bytes, err %v; want nothing until the deadline", n, err)
	}
}

func TestForwards(t *testing.T) {
	p := listen(t)
	c := dial(t, p)
	roundTrip(t, c, "hello")
	big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB, several buffers
	errc := make(chan error, 1)
	go func() { _, err := c.Write(big); errc <- err }()
	_ = c.SetReadDeadline(time.Now().Add(promptly))
	got := make([]byte, len(big))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("1 MiB echo: %v, equal %v", err, bytes.Equal(got, big))
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// A half-close travels through: the echo server finishes and closes its side.
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after half-close: read %d, %v; want EOF", n, err)
	}
}

func TestCutAndRestore(t *testing.T) {
	p := listen(t)
	live := dial(t, p)
	roundTrip(t, live, "before cut")

	p.Cut()
	expectDead(t, live)
	expectRefused(t, p)

	p.Restore()
	roundTrip(t, dial(t, p), "after restore")
}

func TestBlackholeAndRestore(t *testing.T) {
	p := listen(t)
	live := dial(t, p)
	roundTrip(t, live, "before partition")

	p.Blackhole()
	if _, err := live.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	expectSilent(t, live)
	// A new connection is accepted but goes nowhere.
	fresh := dial(t, p)
	if _, err := fresh.Write([]byte("queued")); err != nil {
		t.Fatal(err)
	}
	expectSilent(t, fresh)

	// Healing the partition delivers what was held, on both connections.
	p.Restore()
	expectEcho(t, live, "held")
	expectEcho(t, fresh, "queued")
	roundTrip(t, live, "after partition")
}

func TestBlackholeThenCut(t *testing.T) {
	p := listen(t)
	live := dial(t, p)
	roundTrip(t, live, "before partition")
	p.Blackhole()
	fresh := dial(t, p)
	p.Cut()
	expectDead(t, live)
	expectDead(t, fresh)
	p.Restore()
	roundTrip(t, dial(t, p), "after cut")
}

func TestClose(t *testing.T) {
	p, err := Listen(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	live := dial(t, p)
	roundTrip(t, live, "before close")
	p.Blackhole()
	held := dial(t, p)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	expectDead(t, live)
	expectDead(t, held)
	if c, err := net.DialTimeout("tcp", p.Addr(), promptly); err == nil {
		c.Close()
		t.Fatal("dial succeeded after Close")
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	p.Cut()
	p.Blackhole()
	p.Restore()
}
