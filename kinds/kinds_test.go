package kinds_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/metrics"
	"github.com/workos-emailer/workos-emailer/kinds"
	"github.com/workos-emailer/workos-emailer/mailer"
	"github.com/workos-emailer/workos-emailer/workosapi"
)

// The table is the only place that lists kinds: every entry must be complete, and what the
// rest of the daemon keeps per kind (an object reader, templates and messages in every
// built-in locale, samples, metrics) must exist for it. A kind added to the table alone, or
// with a part missing, fails here.
func TestEveryKindIsComplete(t *testing.T) {
	tm, err := mailer.LoadTemplates(mailer.TemplateOptions{Brand: mailer.Brand{Name: "Acme"}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 2, 9, 30, 0, 0, time.UTC)
	m := metrics.New(metrics.Options{Kinds: kinds.Names()})
	events := map[string]string{}
	for _, k := range kinds.All {
		t.Run(k.Name, func(t *testing.T) {
			if k.Name == "" || k.Title == "" || len(k.Samples) == 0 || k.Samples[0].Variant != "" {
				t.Fatalf("incomplete entry: a name, a title and its own sample first are required: %+v", k)
			}
			if k.SentOnRequest() && (!k.Optional || !slices.Contains(kinds.OnRequest(), k.Name)) {
				t.Error("a kind sent on request is optional (the send API enables it) and listed by OnRequest()")
			}
			if got, ok := kinds.Get(k.Name); !ok || got.Name != k.Name {
				t.Errorf("Get(%q) does not find it", k.Name)
			}
			for _, tr := range k.Triggers {
				if other, dup := events[tr.Event]; dup {
					t.Errorf("event %s is a trigger of %s too", tr.Event, other)
				}
				events[tr.Event] = k.Name
				if tr.ObjectField == "" || len(tr.Require) > 0 && tr.Skip == "" {
					t.Errorf("trigger %s: needs the data field naming the object, and a skip reason for its requirements", tr.Event)
				}
				if got, _, ok := kinds.ForEvent(tr.Event); !ok || got.Name != k.Name {
					t.Errorf("ForEvent(%q) does not give %s", tr.Event, k.Name)
				}
			}
			if _, ok := workosapi.Objects[k.Object]; !ok && !k.SentOnRequest() {
				t.Errorf("object %q has no reader in workosapi.Objects", k.Object)
			}
			if k.Carries == kinds.Link && k.LinkSetting == "" && !k.SentOnRequest() {
				t.Error("a kind that carries a link needs its links.* setting")
			}
			if k.Optional == slices.Contains(kinds.Defaults(), k.Name) {
				t.Error("Defaults() disagrees with Optional")
			}
			for _, s := range k.Samples {
				switch {
				case k.Carries == kinds.Code && s.Code == "",
					(k.Carries == kinds.Link || k.Carries == kinds.AppLink) && s.Link == "",
					k.Expires && s.ExpiresIn <= 0,
					k.Names && s.OrganizationName == "":
					t.Errorf("sample %q lacks what the kind's email shows: %+v", s.Variant, s)
				}
			}
			// Templates and messages: every sample renders in every built-in locale, from the
			// kind's own built-in files, and reads differently in German than in English.
			for _, variant := range append([]string{""}, mailer.Variants(k.Name)...) {
				subjects := map[string]string{}
				for _, locale := range mailer.Locales {
					p, err := tm.RenderSample(k.Name, variant, "", locale, now)
					if err != nil {
						t.Errorf("%s %q: %v", locale, variant, err)
						continue
					}
					subjects[locale] = p.Subject
					if !slices.Contains(p.Files, "built-in "+k.Name+".html") || !slices.Contains(p.Files, "built-in "+k.Name+".txt") ||
						!slices.Contains(p.Files, "built-in "+k.Name+".subject.txt") {
						t.Errorf("%s: rendered from %v, not the kind's own templates", locale, p.Files)
					}
					for _, part := range []string{k.Samples[0].Code, k.Samples[0].Link} {
						if part != "" && (!strings.Contains(p.Text, part) || !strings.Contains(p.HTML, part)) {
							t.Errorf("%s %q: the email does not show %q", locale, variant, part)
						}
					}
				}
				if subjects["de"] == subjects["en"] {
					t.Errorf("variant %q: the German subject is the English one: %q", variant, subjects["en"])
				}
			}
			// Metrics: its series exist from the start, labelled with its name.
			m.Finished(k.Name, "sent", "none")
			if n := emailsSent(t, m, k.Name); n != 1 {
				t.Errorf("workos_emailer_emails_total{kind=%q,state=sent} = %v, want 1", k.Name, n)
			}
		})
	}
}

func TestListedEvents(t *testing.T) {
	defaults := kinds.ListedEvents(nil)
	if !slices.Contains(defaults, "invitation.resent") || !slices.Contains(defaults, "invitation.created") {
		t.Errorf("invitation events are not listed by default: %v", defaults)
	}
	if slices.Contains(defaults, "radar.challenge_created") || slices.Contains(defaults, "user.created") {
		t.Errorf("an optional kind's events are listed though it is not enabled: %v", defaults)
	}
	if got := kinds.ListedEvents([]string{kinds.RadarChallenge}); !slices.Contains(got, "radar.challenge_created") || !slices.IsSorted(got) {
		t.Errorf("enabled radar_challenge: %v", got)
	}
	if k, _ := kinds.Get(kinds.Welcome); k.OnceKey("user_01X") != "welcome:user_01X" {
		t.Errorf("welcome once-key %q", k.OnceKey("user_01X"))
	}
	if k, _ := kinds.Get(kinds.MagicAuth); k.OnceKey("magic_auth_01X") != "" {
		t.Error("magic_auth has a once-key")
	}
}

// emailsSent reads workos_emailer_emails_total{kind,state="sent",reason="none"}.
func emailsSent(t *testing.T, m *metrics.Metrics, kind string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "workos_emailer_emails_total" {
			continue
		}
		for _, s := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["kind"] == kind && labels["state"] == "sent" && labels["reason"] == "none" {
				return s.GetCounter().GetValue()
			}
		}
	}
	return -1
}
