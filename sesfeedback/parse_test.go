package sesfeedback

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const sampleID = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"

func TestParseBothEnvelopes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		outcome   Outcome
		detail    string
		permanent bool
		at        string
	}{
		{"bounce", Bounced, "Permanent/General", true, "2017-08-05T00:41:02.669Z"},
		{"complaint", Complaint, "abuse", false, "2017-08-05T00:41:02.669Z"},
		{"delivery", Delivered, "", false, "2016-10-19T23:20:52.24Z"},
		{"delay", Delayed, "InternalFailure", false, "2020-06-16T00:15:40.641Z"},
		{"reject", Rejected, "Bad content", false, "2017-08-05T00:40:02.012Z"},
		{"send", Ignored, "", false, "2017-08-05T00:40:02.012Z"},
	} {
		for _, envelope := range []string{"sns", "eventbridge"} {
			t.Run(envelope+"-"+tc.name, func(t *testing.T) {
				ev, err := Parse(read(t, envelope+"-"+tc.name+".json"))
				if err != nil {
					t.Fatal(err)
				}
				at, _ := time.Parse(time.RFC3339Nano, tc.at)
				if ev.MessageID != sampleID || ev.Outcome != tc.outcome || ev.Detail != tc.detail || ev.Permanent != tc.permanent ||
					!ev.At.Equal(at) {
					t.Errorf("%+v, want %s %q permanent=%v at %s", ev, tc.outcome, tc.detail, tc.permanent, tc.at)
				}
				if strings.Contains(ev.Detail+ev.Type, "@") {
					t.Errorf("an address in the parsed event: %+v", ev)
				}
			})
		}
	}
	for _, f := range []string{"raw-bounce.json", "sns-identity-bounce.json"} {
		if ev, err := Parse(read(t, f)); err != nil || ev.Outcome != Bounced || ev.MessageID != sampleID {
			t.Errorf("%s: %+v, %v", f, ev, err)
		}
	}
}

// SES's free text may name the recipient; it never leaves the parser.
func TestParseWithholdsAddresses(t *testing.T) {
	body := []byte(`{"eventType":"Reject","mail":{"messageId":"m1"},"reject":{"reason":"Bad content for jane@customer.test"}}`)
	ev, err := Parse(body)
	if err != nil || ev.Outcome != Rejected || strings.Contains(ev.Detail, "@") {
		t.Errorf("%+v %v", ev, err)
	}
}

func TestParseForeignMessages(t *testing.T) {
	for _, body := range [][]byte{read(t, "foreign-s3.json"), read(t, "sns-subscription-confirmation.json"), []byte("not json"),
		[]byte(`{"source":"aws.ec2","detail":{}}`), []byte(`{"Type":"Notification","Message":"{\"eventType\":\"Bounce\"}"}`), []byte(`null`)} {
		if _, err := Parse(body); !errors.Is(err, ErrForeign) {
			t.Errorf("%.60s: %v, want ErrForeign", body, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	entries, _ := os.ReadDir("testdata")
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".json") {
			b, _ := os.ReadFile(filepath.Join("testdata", e.Name()))
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := Parse(body)
		if err != nil {
			if !errors.Is(err, ErrForeign) {
				t.Fatalf("an error that is not ErrForeign: %v", err)
			}
			return
		}
		if ev.MessageID == "" || ev.Outcome == "" || len(ev.Detail) > 161 || len(ev.Type) > 80 {
			t.Fatalf("%+v", ev)
		}
	})
}

func read(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
