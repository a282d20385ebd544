package fakeses_test

import (
	"context"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
	"github.com/workos-emailer/workos-emailer/mailer"
)

// Accept reads what ServeHTTP reads (but the bodies) from what the real SDK sends, and refuses
// what ServeHTTP refuses.
func TestAcceptReadsWhatServeHTTPReads(t *testing.T) {
	full := fakeses.New()
	fullURL := full.Start()
	defer full.Close()
	var lean []fakeses.Message
	leanSrv := fakeses.New()
	leanSrv.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/v2/email/outbound-emails" {
			return false
		}
		leanSrv.Accept(w, r, func(m fakeses.Message) { lean = append(lean, m) })
		return true
	}
	leanURL := leanSrv.Start()
	defer leanSrv.Close()

	msg := mailer.Message{To: "to@example.com", Subject: `Sign in to "Acme" — ünïcode`, HTML: strings.Repeat(`<p style="a">"q" & \ x</p>`, 200),
		Text: "text\n\"quoted\"", EventID: "event_01ABC", Kind: "magic_auth"}
	for _, url := range []string{fullURL, leanURL} {
		ses, err := mailer.NewSES(context.Background(), mailer.SESOptions{Region: "us-east-1", Endpoint: url,
			From: "Acme <no-reply@acme.example>", ReplyTo: "help@acme.example", ConfigurationSet: "tx",
			Credentials: credentials.NewStaticCredentialsProvider("AKID", "secret", "")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ses.Send(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
	}
	want := full.Messages()
	if len(want) != 1 || len(lean) != 1 {
		t.Fatalf("%d and %d messages, want 1 each", len(want), len(lean))
	}
	w, got := want[0], lean[0]
	w.MessageID, got.MessageID, w.HTML, w.Text = "", "", "", ""
	if !reflect.DeepEqual(got, w) {
		t.Errorf("Accept read %+v\nServeHTTP read %+v", got, w)
	}

	for name, body := range map[string]string{
		"no from":    `{"Destination":{"ToAddresses":["a@b.c"]},"Content":{"Simple":{}}}`,
		"no to":      `{"FromEmailAddress":"a@b.c","Destination":{"ToAddresses":[]},"Content":{"Simple":{}}}`,
		"no simple":  `{"FromEmailAddress":"a@b.c","Destination":{"ToAddresses":["a@b.c"]},"Content":{"Raw":{}}}`,
		"not json":   `hello`,
		"empty body": ``,
	} {
		resp, err := http.Post(leanURL+"/v2/email/outbound-emails", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		// No Authorization header: refused before the body is read, as ServeHTTP does.
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s without credentials: status %d, want 403", name, resp.StatusCode)
		}
		req, _ := http.NewRequest(http.MethodPost, leanURL+"/v2/email/outbound-emails", strings.NewReader(body))
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 test")
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", name, resp.StatusCode)
		}
	}
	if len(lean) != 1 {
		t.Errorf("%d messages accepted, want only the valid one", len(lean))
	}
}
