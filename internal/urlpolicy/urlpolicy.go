// Package urlpolicy is the one rule for the URLs and hosts the daemon sends secrets or people
// to: https, or plain http only to this machine (development, emulators), where nothing
// crosses a network.
package urlpolicy

import (
	"errors"
	"net"
	"net/url"
)

// Check accepts an absolute https URL, or an http one whose host is a loopback address.
func Check(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return errors.New("must be an absolute URL")
	}
	switch {
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && Loopback(u.Hostname()):
		return nil
	}
	return errors.New("must use https (http is allowed only for localhost)")
}

// Loopback reports whether host is this machine: localhost or a loopback address.
func Loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
