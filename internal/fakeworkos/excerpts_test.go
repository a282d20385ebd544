package fakeworkos

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	"github.com/pb33f/libopenapi-validator/config"
	"github.com/pb33f/libopenapi-validator/paths"
	"github.com/pb33f/libopenapi-validator/responses"
	"github.com/pb33f/libopenapi-validator/schema_validation"
)

// What the fake serves beyond the npm spec 0.1.0 (Radar email challenges, the User's locale) is
// held to the excerpts of WorkOS's spec v0.61.0 in testdata, which, unlike the npm spec, are in
// the repository: this test never skips.
func TestConformsToSpecExcerpts(t *testing.T) {
	raw, err := os.ReadFile("testdata/workos-spec-v0.61-excerpts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := libopenapi.NewDocument(raw)
	if err != nil {
		t.Fatal(err)
	}
	m, err := doc.BuildV3Model()
	if err != nil {
		t.Fatal(err)
	}
	opts := []config.Option{config.WithFormatAssertions()}
	vopts := config.NewValidationOptions(opts...)
	bodies := responses.NewResponseBodyValidator(&m.Model, opts...)
	schemas := schema_validation.NewSchemaValidator(opts...)
	schema := func(name string, v []byte) {
		t.Helper()
		s := m.Model.Components.Schemas.GetOrZero(name)
		if s == nil {
			t.Fatalf("the excerpts have no schema %s", name)
		}
		if _, errs := schemas.ValidateSchemaBytes(s.Schema(), v); len(errs) > 0 {
			t.Errorf("%s does not conform to %s:%s", clip(v), name, describe(errs))
		}
	}

	// The validator itself must reject what the spec does not allow.
	if _, errs := schemas.ValidateSchemaBytes(m.Model.Components.Schemas.GetOrZero("RadarChallenge").Schema(),
		[]byte(`{"object":"radar_challenge","id":"radar_challenge_01X","type":"sms"}`)); len(errs) == 0 {
		t.Fatal("the excerpts accept a challenge without code or expiry, of type sms")
	}

	f := New(specAPIKey)
	url := f.Start()
	t.Cleanup(f.Close)
	user := f.AddUser("Marcelina", "Davis", "marcelina@example.com")
	f.Update(user, map[string]any{"locale": "de-DE"})
	_, challenge, code := f.AddRadarChallenge("marcelina@example.com", user, time.Now().Add(10*time.Minute))
	get := func(path string, want int) []byte {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url+path, nil)
		req.Header.Set("Authorization", "Bearer "+specAPIKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s: %d, want %d: %s", path, resp.StatusCode, want, clip(body))
		}
		resp.Body = io.NopCloser(strings.NewReader(string(body)))
		req.URL.Host = "api.workos.com"
		req.URL.Scheme = "https"
		if item, errs, tmpl := paths.FindPath(req, &m.Model, vopts); len(errs) == 0 {
			if _, errs := bodies.ValidateResponseBodyWithPathItem(req, resp, item, tmpl); len(errs) > 0 {
				t.Errorf("%s: the answer does not conform:%s\nbody: %s", path, describe(errs), clip(body))
			}
		} else if strings.HasPrefix(path, "/user_management/radar_challenges/") {
			t.Errorf("%s: not in the excerpts:%s", path, describe(errs))
		}
		return body
	}

	body := get("/user_management/radar_challenges/"+challenge, http.StatusOK)
	if !strings.Contains(string(body), `"code":"`+code+`"`) {
		t.Errorf("the challenge lacks its code: %s", body)
	}
	get("/user_management/radar_challenges/radar_challenge_01MISSING", http.StatusNotFound)
	schema("UserlandUser", get("/user_management/users/"+user, http.StatusOK))

	var page struct{ Data []json.RawMessage }
	if err := json.Unmarshal(get("/events?events=radar.challenge_created", http.StatusOK), &page); err != nil || len(page.Data) != 1 {
		t.Fatalf("events page: %v, %d events", err, len(page.Data))
	}
	schema("RadarChallengeCreated", page.Data[0])
	for _, secret := range []string{code, `"code"`} {
		if strings.Contains(string(page.Data[0]), secret) {
			t.Errorf("the event carries the challenge's code: %s", page.Data[0])
		}
	}

	// The example event the worker's parsing test reads is the spec's shape too.
	examples, err := os.ReadFile("../../testdata/workos-examples/events-from-spec-v0.61.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(examples)), "\n") {
		if strings.Contains(line, `"event":"radar.challenge_created"`) {
			schema("RadarChallengeCreated", []byte(line))
			checked++
		}
	}
	if checked != 1 {
		t.Errorf("checked %d radar.challenge_created examples, want 1", checked)
	}
}
