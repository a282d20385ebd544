// Package sealed encrypts what the daemon must keep for a while but must not keep in clear: a
// requested email's address and parameters, until the email is sent. The key comes from a
// secret the store never sees (the send API's token), so the store file alone reveals nothing.
package sealed

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

const (
	version  = 1
	info     = "workos-emailer sealed request v1"
	nonceLen = 12
)

// ErrOpen: no key opens the sealed value (the secret it was sealed with is gone, or the value is
// damaged).
var ErrOpen = errors.New("cannot open the sealed value with the current or previous secret")

// Box seals with its first secret and opens with any of them, so a secret can be rotated
// without losing what the old one sealed.
type Box struct {
	aeads []cipher.AEAD
}

// New returns a Box for secrets, the current one first; empty ones are ignored.
func New(secrets ...string) (*Box, error) {
	b := &Box{}
	for _, s := range secrets {
		if s == "" {
			continue
		}
		key, err := hkdf.Key(sha256.New, []byte(s), nil, info, 32)
		if err != nil {
			return nil, fmt.Errorf("derive the sealing key: %w", err)
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("derive the sealing key: %w", err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("derive the sealing key: %w", err)
		}
		b.aeads = append(b.aeads, aead)
	}
	if len(b.aeads) == 0 {
		return nil, errors.New("sealing needs a secret")
	}
	return b, nil
}

// Seal encrypts plain, bound to ad (the value it belongs to: it opens only with the same ad).
func (b *Box) Seal(plain, ad []byte) ([]byte, error) {
	out := make([]byte, 1+nonceLen, 1+nonceLen+len(plain)+b.aeads[0].Overhead())
	out[0] = version
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return b.aeads[0].Seal(out, out[1:1+nonceLen], plain, ad), nil
}

// Open decrypts what Seal sealed with any of the Box's secrets and the same ad.
func (b *Box) Open(sealed, ad []byte) ([]byte, error) {
	if len(sealed) < 1+nonceLen || sealed[0] != version {
		return nil, ErrOpen
	}
	nonce, body := sealed[1:1+nonceLen], sealed[1+nonceLen:]
	for _, a := range b.aeads {
		if plain, err := a.Open(nil, nonce, body, ad); err == nil {
			return plain, nil
		}
	}
	return nil, ErrOpen
}
