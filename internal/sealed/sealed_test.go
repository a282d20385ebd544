package sealed

import (
	"bytes"
	"errors"
	"testing"
)

func TestSealOpensWithTheCurrentOrPreviousSecretOnly(t *testing.T) {
	old, err := New("old-secret-0123456789abcdef0123456789")
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte(`{"email":"ada@example.com"}`)
	s, err := old.Seal(plain, []byte("request_1"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(s, []byte("ada@example.com")) {
		t.Fatal("the sealed value holds the plain text")
	}
	rotated, _ := New("new-secret-0123456789abcdef0123456789", "old-secret-0123456789abcdef0123456789")
	if got, err := rotated.Open(s, []byte("request_1")); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("the previous secret does not open it: %q, %v", got, err)
	}
	fresh, _ := rotated.Seal(plain, []byte("request_1"))
	if _, err := old.Open(fresh, []byte("request_1")); !errors.Is(err, ErrOpen) {
		t.Errorf("a value sealed with the new secret opened with the old one alone: %v", err)
	}
	gone, _ := New("new-secret-0123456789abcdef0123456789")
	if _, err := gone.Open(s, []byte("request_1")); !errors.Is(err, ErrOpen) {
		t.Errorf("opened without the secret it was sealed with: %v", err)
	}
	if _, err := old.Open(s, []byte("request_2")); !errors.Is(err, ErrOpen) {
		t.Errorf("opened for another request: %v", err)
	}
	again, _ := old.Seal(plain, []byte("request_1"))
	if bytes.Equal(again, s) {
		t.Error("sealing twice gives the same bytes: the nonce is not random")
	}
	if _, err := New("", ""); err == nil {
		t.Error("New without a secret succeeded")
	}
}

func FuzzOpen(f *testing.F) {
	b, _ := New("fuzz-secret-0123456789abcdef0123456789")
	s, _ := b.Seal([]byte("hello"), nil)
	f.Add(s)
	f.Add([]byte{1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		plain, err := b.Open(in, nil)
		if err == nil && !bytes.Equal(plain, []byte("hello")) {
			t.Fatalf("forged value opened: %q", plain)
		}
	})
}
