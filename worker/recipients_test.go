package worker

import (
	"bytes"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/workos-emailer/workos-emailer/internal/fakeses"
	"github.com/workos-emailer/workos-emailer/internal/fakeworkos"
	"github.com/workos-emailer/workos-emailer/store"
)

// Addresses as WorkOS may hold them: an internationalized domain reaches SES in Punycode, a
// local part that is not ASCII is refused up front (SES cannot send it), surrounding spaces go.
func TestInternationalizedAndUntidyRecipients(t *testing.T) {
	h := newHarness(t)
	now := time.Now()
	idn, _, _ := h.wos.AddCode("magic_auth", "juergen@bücher.example", "user_01", now.Add(time.Hour))
	cjk, _, _ := h.wos.AddCode("magic_auth", "user@例え.テスト", "user_02", now.Add(time.Hour))
	utf8Local, _, _ := h.wos.AddCode("magic_auth", "用户@example.com", "user_03", now.Add(time.Hour))
	padded, _, _ := h.wos.AddCode("magic_auth", "  pad@example.com ", "user_04", now.Add(time.Hour))
	h.run()

	assertState(t, h, utf8Local, store.Dead, "not ASCII")
	if d := h.delivery(utf8Local); strings.Contains(d.Reason, "用户") || d.Attempts != 1 {
		t.Errorf("record %+v: the reason echoes the address, or it was tried again", d)
	}
	assertSent(t, h, map[string]string{
		idn:    "juergen@xn--bcher-kva.example",
		cjk:    "user@xn--r8jz45g.xn--zckzah",
		padded: "pad@example.com",
	})
	if n := h.ses.SendRequests(); n != 3 {
		t.Errorf("%d SendEmail requests, want 3", n)
	}
}

// SES names the recipient in some rejections ("...failed the check in region US-EAST-1:
// user@example.com"); the record, and every log line above debug, keep it out.
func TestAddressesStayOutOfLogsAndStore(t *testing.T) {
	const rejected = "jane.doe@customer.example"
	h := newHarness(t)
	h.ses.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if in, ok := readSend(r); ok && in.Destination.ToAddresses[0] == rejected {
			fakeses.WriteError(w, http.StatusBadRequest, "MessageRejected",
				"Illegal address: "+rejected)
			return true
		}
		return false
	}
	now := time.Now()
	orgID := h.wos.AddOrganization("Globex")
	inviter := h.wos.AddUser("Hank", "Scorpio", "hank@globex.example")
	dead, _, _ := h.wos.AddCode("magic_auth", rejected, "user_01", now.Add(time.Hour))
	sent, _, _ := h.wos.AddInvitation(fakeworkos.Invitation{Email: "sam@customer.example", ExpiresAt: now.Add(time.Hour),
		OrganizationID: orgID, InviterUserID: inviter})
	h.run()

	d := assertState(t, h, dead, store.Dead, "MessageRejected")
	if strings.Contains(d.Reason, "@") || !strings.Contains(d.Reason, "Illegal address: <address>") {
		t.Errorf("stored reason %q, want the address redacted and the rest kept", d.Reason)
	}
	assertState(t, h, sent, store.Sent, "")
	var sawDetail bool
	for _, e := range h.logEntries() {
		for _, addr := range []string{rejected, "sam@customer.example", "hank@globex.example"} {
			if e.Level != "debug" && strings.Contains(e.Raw, addr) {
				t.Errorf("a %s line names %s: %s", e.Level, addr, e.Raw)
			}
		}
		sawDetail = sawDetail || e.Level == "debug" && strings.Contains(e.Raw, "Illegal address: "+rejected)
	}
	if !sawDetail {
		t.Error("the full SES answer is not at debug level")
	}
	// Nowhere in the store file either.
	if err := h.store.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(h.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, domain := range []string{"customer.example", "globex.example"} {
		if bytes.Contains(raw, []byte(domain)) {
			t.Errorf("the store file holds an address at %s", domain)
		}
	}
	h.openStore()
}

// A sent record names its recipient by the store's keyed hash, so trace finds it in any case.
func TestRecordsKeepTheRecipientsKeyedHash(t *testing.T) {
	h := newHarness(t)
	ev, _, _ := h.wos.AddCode("magic_auth", "Mixed.Case@Customer.test", "user_01", time.Now().Add(time.Hour))
	h.run()
	d := h.delivery(ev)
	if d.State != store.Sent || d.Recipient == "" || d.Recipient != h.store.RecipientHash("mixed.case@customer.test") {
		t.Errorf("record %+v: want sent with the recipient's hash", d)
	}
	if got, err := h.store.Trace(h.store.RecipientHash("MIXED.CASE@customer.test")); err != nil || len(got) != 1 || got[0].EventID != ev {
		t.Errorf("trace: %+v %v", got, err)
	}
}
