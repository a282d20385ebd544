// Package kinds is the table of the kinds of email: for each, the WorkOS events that cause it,
// the object it is built from, what makes it eligible, its once-key, what the email carries and
// the sample data of its previews. The pipeline (worker), the templates and previews (mailer),
// configuration and metrics read the table; adding a kind adds an entry to All, its templates
// and its messages, and nothing else.
package kinds

import (
	"slices"
	"time"
)

// Kind is one kind of email.
type Kind struct {
	// Name names the kind in events.enabled, template file names, metrics and records.
	Name string
	// Title is the kind in a few words, for the preview gallery.
	Title string
	// Optional kinds are off unless events.enabled names them, and their events are listed
	// only then (every sign-up would otherwise leave a skipped record behind). The others'
	// events are listed either way, so a disabled one's events are recorded as skipped rather
	// than passed over unseen.
	Optional bool
	// Triggers are the events that cause the email. A kind without any is sent on request
	// (SentOnRequest).
	Triggers []Trigger
	// Object is the WorkOS object the email is built from (a key of workosapi.Objects).
	Object string
	// Carries is the secret or link the email is for.
	Carries Carries
	// LinkSetting, for Carries Link, names the links.* setting whose URL template builds the
	// link from the object's token instead of WorkOS's URL.
	LinkSetting string
	// Expires: the object has an expires_at, and once it has passed the email is not sent.
	Expires bool
	// State, when set, is the state the object must be in (an invitation: pending).
	State string
	// Verified: the user's address must be verified.
	Verified bool
	// MatchEventEmail: the object's address must be the event's (an object that changed hands
	// is not sent); the notices go to the user's address as it is now.
	MatchEventEmail bool
	// ToEventEmail: sent to the address in the event, not the object's (a password notice goes
	// where the account's mail went when the password changed: an attacker may have changed
	// the address since).
	ToEventEmail bool
	// Once, when set, makes the email go out at most once per object, ever: the once-key is
	// Once + ":" + the object id.
	Once string
	// MaxAge: an event older than this is not sent (a notice days late would puzzle more than
	// please). 0: no limit of its own.
	MaxAge time.Duration
	// Names: the email shows the organization's and the inviter's names, read from WorkOS.
	Names bool
	// Superseded: a newer email of this kind to the same address replaces an older one not
	// sent yet (a person who asked for three codes during an outage gets the last one).
	Superseded bool
	// Samples are the made-up but realistic emails previews, golden files and the start-up
	// check of every template render: the first is the kind's own, the others variants.
	Samples []Sample
}

// Carries is what the email exists to deliver.
type Carries int

const (
	// Nothing beyond the message itself.
	Nothing Carries = iota
	// Code: the object's one-time code.
	Code
	// Link: a link built from the object's token, or the object's own URL.
	Link
	// AppLink: the application's address (links.app_url), when configured.
	AppLink
)

// Trigger is one WorkOS event type that causes a kind's email.
type Trigger struct {
	Event string
	// ObjectField is the event data field that names the kind's Object.
	ObjectField string
	// Require lists what the event data must say; an event that says otherwise is skipped
	// with the reason Skip.
	Require []Field
	Skip    string
	// SkipCode is the reason code (a metric label) of that skip; "" is not_applicable.
	SkipCode string
	// Resent: the email is a reminder of an earlier one.
	Resent bool
}

// Field is a field of an event's data and the value it must have, as JSON text without quotes
// ("true", "email").
type Field struct{ Name, Value string }

// Sample is what previews show of a kind: the parts of an email its object and event provide.
type Sample struct {
	// Variant names a variant ("reminder"); "" is the kind's own sample.
	Variant          string
	Code             string
	Link             string
	ExpiresIn        time.Duration // from the render time; 0: none
	OrganizationName string
	InviterName      string
	InviterEmail     string
	FirstName        string
	EventAgo         time.Duration // the event happened this long before the render time
	Resent           bool
}

// Names of the kinds, for code that means one of them in particular (tests, the benchmark).
const (
	Invitation        = "invitation"
	MagicAuth         = "magic_auth"
	EmailVerification = "email_verification"
	PasswordReset     = "password_reset"
	Welcome           = "welcome"
	PasswordChanged   = "password_changed"
	RadarChallenge    = "radar_challenge"
	MagicLink         = "magic_link"
)

// RequestMaxAge: an email the app requested is not sent once this long has passed since the
// request (a daemon down that long): the person has stopped waiting for their sign-in link.
const RequestMaxAge = 15 * time.Minute

// noticeMaxAge: a notice for an older event is not sent. A welcome days late, after an outage
// or a backfill that reached back a month, would puzzle more than please, and a late
// password notice would ring false alarms about a change long settled.
const noticeMaxAge = 72 * time.Hour

const sampleToken = "Z1uX3RbwcIl5fIGJJJCXXisdI"

// All is the table, the optional kinds last.
var All = []Kind{
	{
		Name: Invitation, Title: "Invitation",
		Triggers: []Trigger{
			{Event: "invitation.created", ObjectField: "id"},
			// An admin's "Resend" in the dashboard, or the Resend Invitation API.
			{Event: "invitation.resent", ObjectField: "id", Resent: true},
		},
		Object: "invitation", Carries: Link, LinkSetting: "invitation_url", Expires: true, State: "pending",
		MatchEventEmail: true, Names: true,
		Samples: []Sample{
			{Link: "https://auth.example.com/invite?invitation_token=" + sampleToken, ExpiresIn: 7 * 24 * time.Hour,
				OrganizationName: "Globex Robotics", InviterName: "Ada Lovelace", InviterEmail: "ada@acme.example"},
			{Variant: "reminder", Link: "https://auth.example.com/invite?invitation_token=" + sampleToken, ExpiresIn: 5 * 24 * time.Hour,
				OrganizationName: "Globex Robotics", InviterName: "Ada Lovelace", InviterEmail: "ada@acme.example", Resent: true},
		},
	},
	{
		Name: MagicAuth, Title: "Magic Auth code",
		Triggers: []Trigger{{Event: "magic_auth.created", ObjectField: "id"}},
		Object:   "magic_auth", Carries: Code, Expires: true, MatchEventEmail: true, Superseded: true,
		Samples: []Sample{{Code: "123456", ExpiresIn: 10 * time.Minute}},
	},
	{
		Name: EmailVerification, Title: "Email verification",
		Triggers: []Trigger{{Event: "email_verification.created", ObjectField: "id"}},
		Object:   "email_verification", Carries: Code, Expires: true, MatchEventEmail: true, Superseded: true,
		Samples: []Sample{{Code: "654321", ExpiresIn: 24 * time.Hour}},
	},
	{
		Name: PasswordReset, Title: "Password reset",
		Triggers: []Trigger{{Event: "password_reset.created", ObjectField: "id"}},
		Object:   "password_reset", Carries: Link, LinkSetting: "password_reset_url", Expires: true, MatchEventEmail: true,
		Superseded: true,
		Samples:    []Sample{{Link: "https://auth.example.com/reset-password?token=" + sampleToken, ExpiresIn: time.Hour}},
	},
	{
		Name: Welcome, Title: "Welcome", Optional: true,
		// A user is welcomed when their address is verified: by the verification, or at
		// creation when the address was verified already (a social or SSO sign-up).
		Triggers: []Trigger{
			{Event: "authentication.email_verification_succeeded", ObjectField: "user_id",
				Require: []Field{{"status", "succeeded"}}, Skip: "the verification did not succeed", SkipCode: "not_verified"},
			{Event: "user.created", ObjectField: "id", Require: []Field{{"email_verified", "true"}},
				Skip: "the user's address was not verified at sign-up; the welcome follows its verification", SkipCode: "not_verified"},
		},
		Object: "user", Carries: AppLink, Verified: true, Once: "welcome", MaxAge: noticeMaxAge,
		Samples: []Sample{{FirstName: "Grace", Link: "https://app.example.com/"}},
	},
	{
		Name: PasswordChanged, Title: "Password changed", Optional: true,
		Triggers: []Trigger{{Event: "password_reset.succeeded", ObjectField: "user_id"}},
		Object:   "user", Carries: AppLink, ToEventEmail: true, MaxAge: noticeMaxAge,
		Samples: []Sample{{FirstName: "Grace", EventAgo: 2 * time.Minute, Link: "https://app.example.com/"}},
	},
	{
		Name: RadarChallenge, Title: "Sign-in confirmation code", Optional: true,
		// WorkOS Radar challenging a suspicious sign-in; other challenge types are not email.
		Triggers: []Trigger{{Event: "radar.challenge_created", ObjectField: "radar_challenge_id",
			Require: []Field{{"type", "email"}}, Skip: "only email challenges are sent by email"}},
		Object: "radar_challenge", Carries: Code, Expires: true, MatchEventEmail: true, Superseded: true,
		Samples: []Sample{{Code: "482913", ExpiresIn: 10 * time.Minute}},
	},
	{
		Name: MagicLink, Title: "Magic Link", Optional: true,
		// The legacy Passwordless Sessions API: the send API creates the session and its link.
		Object: "passwordless_session", Carries: Link, Expires: true, MaxAge: RequestMaxAge,
		Samples: []Sample{{Link: "https://auth.workos.com/passwordless/4TeRexuejWCKs9rrFOIuLRYEr/confirm", ExpiresIn: 15 * time.Minute}},
	},
}

// byName and byEvent index All.
var (
	byName  = map[string]*Kind{}
	byEvent = map[string]eventKind{}
)

type eventKind struct {
	kind    *Kind
	trigger *Trigger
}

func init() {
	for i := range All {
		k := &All[i]
		byName[k.Name] = k
		for j := range k.Triggers {
			byEvent[k.Triggers[j].Event] = eventKind{k, &k.Triggers[j]}
		}
	}
}

// Get returns the kind named name.
func Get(name string) (*Kind, bool) {
	k, ok := byName[name]
	return k, ok
}

// ForEvent returns the kind an event type causes and its trigger; ok is false for event types
// no kind handles.
func ForEvent(eventType string) (k *Kind, t *Trigger, ok bool) {
	ek, ok := byEvent[eventType]
	return ek.kind, ek.trigger, ok
}

// Names lists every kind's name, in table order.
func Names() []string {
	names := make([]string, len(All))
	for i, k := range All {
		names[i] = k.Name
	}
	return names
}

// Defaults are the kinds sent when events.enabled is not set: every kind that is not optional.
func Defaults() []string {
	var names []string
	for _, k := range All {
		if !k.Optional {
			names = append(names, k.Name)
		}
	}
	return names
}

// ListedEvents are the event types to ask WorkOS for when the given kinds are enabled, sorted:
// every trigger of a kind that is not optional, and of the optional ones enabled.
func ListedEvents(enabled []string) []string {
	var types []string
	for _, k := range All {
		if !k.Optional || slices.Contains(enabled, k.Name) {
			for _, t := range k.Triggers {
				types = append(types, t.Event)
			}
		}
	}
	slices.Sort(types)
	return types
}

// SentOnRequest: the kind has no triggers; the app asks for it through the send API (WorkOS
// emits no event for it), and the daemon creates its object itself.
func (k *Kind) SentOnRequest() bool { return len(k.Triggers) == 0 }

// OnRequest lists the kinds the send API sends, in table order.
func OnRequest() []string {
	var names []string
	for _, k := range All {
		if k.SentOnRequest() {
			names = append(names, k.Name)
		}
	}
	return names
}

// OnceKey is the once-key of the email of kind k for the object, or "".
func (k *Kind) OnceKey(objectID string) string {
	if k.Once == "" {
		return ""
	}
	return k.Once + ":" + objectID
}
