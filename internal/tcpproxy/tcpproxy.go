// Package tcpproxy is a loopback TCP proxy a test controls, to cut or partition a daemon's
// connection to a server (its database) without touching either process.
//
// A Proxy is in one of three modes:
//   - forwarding (the start, and after Restore): every connection is dialled through to the
//     target and bytes flow both ways;
//   - cut (after Cut): open connections were reset, and new ones are accepted and closed at once,
//     like a server that went away;
//   - blackholed (after Blackhole): a network partition. Open connections stay open but no byte
//     crosses in either direction, and new connections are accepted but never dialled through, so
//     the client waits until its own timeout. Restore heals the partition: held bytes are
//     delivered and held connections are dialled through, as TCP would once packets get through
//     again. Cut after Blackhole kills them instead.
package tcpproxy

import (
	"context"
	"io"
	"net"
	"sync"
	"time"
)

type mode int

const (
	forwarding mode = iota
	cut
	blackholed
	closed
)

// dialTimeout bounds a dial to the target.
const dialTimeout = 10 * time.Second

// Proxy forwards connections from a loopback port to a target address.
type Proxy struct {
	target string
	ln     net.Listener

	mu     sync.Mutex
	mode   mode
	healed chan struct{} // while blackholed: closed when the mode changes
	links  map[*link]struct{}
	wg     sync.WaitGroup
}

// link is one client connection and, once dialled, its server connection.
type link struct {
	client net.Conn
	done   chan struct{} // closed by abort

	mu      sync.Mutex
	server  net.Conn
	aborted bool
}

// Listen listens on 127.0.0.1 on a free port and forwards every connection to target.
func Listen(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, ln: ln, links: map[*link]struct{}{}}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr returns the proxy's address, host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut resets every open connection, both sides at once, and closes new connections as soon as
// they are accepted, until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == closed {
		return
	}
	p.setModeLocked(cut)
	for l := range p.links {
		l.abort(true)
		delete(p.links, l)
	}
}

// Blackhole stops forwarding bytes in either direction on open connections, which stay open, and
// leaves new connections accepted but never dialled through: a network partition, until Restore
// (which heals it) or Cut (which kills them).
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode == closed || p.mode == blackholed {
		return
	}
	p.setModeLocked(blackholed)
	p.healed = make(chan struct{})
}

// Restore forwards again: new connections are dialled through, and connections held by
// Blackhole resume.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mode != closed {
		p.setModeLocked(forwarding)
	}
}

// Close stops listening, closes every connection and waits for the proxy's goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.mode == closed {
		p.mu.Unlock()
		return nil
	}
	p.setModeLocked(closed)
	err := p.ln.Close()
	for l := range p.links {
		l.abort(false)
		delete(p.links, l)
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

// setModeLocked changes the mode, waking whoever waits for a blackhole to end. p.mu is held.
func (p *Proxy) setModeLocked(m mode) {
	if p.healed != nil && m != blackholed {
		close(p.healed)
		p.healed = nil
	}
	p.mode = m
}

// waitForwarding blocks while the proxy is blackholed. It reports false when l was aborted.
func (p *Proxy) waitForwarding(l *link) bool {
	for {
		p.mu.Lock()
		m, healed := p.mode, p.healed
		p.mu.Unlock()
		if m != blackholed {
			select {
			case <-l.done:
				return false
			default:
				return m == forwarding
			}
		}
		select {
		case <-healed:
		case <-l.done:
			return false
		}
	}
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.mu.Lock()
		switch p.mode {
		case cut, closed:
			p.mu.Unlock()
			abortConn(c, true)
			continue
		}
		l := &link{client: c, done: make(chan struct{})}
		p.links[l] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(l)
	}
}

// serve dials l through to the target once the proxy forwards, then copies both ways.
func (p *Proxy) serve(l *link) {
	defer p.wg.Done()
	defer p.forget(l)
	if !p.waitForwarding(l) {
		l.abort(false)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	go func() {
		select {
		case <-l.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	var d net.Dialer
	server, err := d.DialContext(ctx, "tcp", p.target)
	cancel()
	if err != nil {
		l.abort(false)
		return
	}
	if !l.setServer(server) {
		return // aborted while dialling
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(l, server, l.client) }()
	go func() { defer wg.Done(); p.pipe(l, l.client, server) }()
	wg.Wait()
	l.abort(false)
}

// pipe copies src to dst, holding bytes while the proxy is blackholed. At src's EOF it half-closes
// dst; on any other failure it aborts the link.
func (p *Proxy) pipe(l *link, dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.waitForwarding(l) {
				l.abort(false)
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				l.abort(false)
				return
			}
		}
		if err == io.EOF {
			if !p.waitForwarding(l) {
				l.abort(false)
				return
			}
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
				return
			}
			l.abort(false)
			return
		}
		if err != nil {
			l.abort(false)
			return
		}
	}
}

func (p *Proxy) forget(l *link) {
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

// setServer records l's server connection; it reports false, closing server, if l was aborted.
func (l *link) setServer(server net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.aborted {
		_ = server.Close()
		return false
	}
	l.server = server
	return true
}

// abort closes both of l's connections, with a TCP reset when reset is set.
func (l *link) abort(reset bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.aborted {
		return
	}
	l.aborted = true
	close(l.done)
	abortConn(l.client, reset)
	if l.server != nil {
		abortConn(l.server, reset)
	}
}

// abortConn closes c; with reset, by a TCP RST rather than an orderly FIN.
func abortConn(c net.Conn, reset bool) {
	if tc, ok := c.(*net.TCPConn); ok && reset {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
