// Package workosapi adapts the WorkOS API for the worker: the official workos-go clients behind
// transports that read what workos-go drops (Retry-After, whether the key was accepted, fields
// its structs lack), errors classified by what they mean for a delivery, and a cache of the
// names emails show.
package workosapi

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Event is one WorkOS event. Events carry no secrets.
type Event struct {
	ID        string
	Type      string
	CreatedAt time.Time
	Data      json.RawMessage
}

// ListRequest asks for the page after After, or from Since when After is empty.
type ListRequest struct {
	After string
	Since time.Time
	Limit int
	Types []string
}

// Page is one page of the event stream, oldest first.
type Page struct {
	Events []Event
}

// Object is what a Get endpoint returned for one of the objects emails are built from
// (Objects). Code, Token and Link are secrets: they live only for one send, and the String
// method keeps them out of any accidental %v.
type Object struct {
	// Type is WorkOS's name for the object ("magic_auth", "user", ...).
	Type           string
	ID             string
	Email          string
	ExpiresAt      time.Time // zero for a user
	State          string
	OrganizationID string
	InviterUserID  string
	// UserID is the object's user (a user's own id for a user).
	UserID string
	// A user's: first name, whether the address is verified, metadata, and preferred locale
	// (e.g. "de-DE"; workos-go's User struct drops it, so it is read from the answer).
	FirstName     string
	EmailVerified bool
	Metadata      map[string]string
	Locale        string
	Code          string
	Token         string
	Link          string
}

// String redacts the secret fields.
func (o Object) String() string {
	return fmt.Sprintf("Object{Type:%s ID:%s State:%s ExpiresAt:%s secrets:redacted}", o.Type, o.ID, o.State, o.ExpiresAt.Format(time.RFC3339))
}

// GoString redacts like String, for %#v.
func (o Object) GoString() string { return o.String() }

// Person is a WorkOS user as shown in an email.
type Person struct {
	Name     string // first and last
	Email    string
	Metadata map[string]string
	// Locale is the user's preferred locale, "" when not set.
	Locale string
}

// validObjectID guards the SDK, which pastes IDs into URL paths unescaped.
var validObjectID = regexp.MustCompile(`^[a-z][a-z_]*_[0-9A-Za-z]{1,64}$`)

// ValidObjectID reports whether id has the shape of a WorkOS id (prefix_ULID, e.g.
// user_01H...), which also makes it safe to put in a URL path.
func ValidObjectID(id string) bool { return validObjectID.MatchString(id) }

// ValidEventID reports whether id has the shape of a WorkOS event id.
func ValidEventID(id string) bool { return strings.HasPrefix(id, "event_") && ValidObjectID(id) }
