package fakeworkos

import "net/http"

// ServeAllTypes answers an /events request as the fake would, but ignores the events= type
// filter: a WorkOS that sends event types the client did not ask for. Call it from Intercept.
func (s *Server) ServeAllTypes(w http.ResponseWriter, r *http.Request) {
	r2 := r.Clone(r.Context())
	q := r2.URL.Query()
	q.Del("events")
	r2.URL.RawQuery = q.Encode()
	s.listEvents(w, r2)
}

// AddObject stores an object of the given kind (e.g. "magic_auth") for the Get endpoints
// without creating an event, so a test can point a hand-made event at it. fields are copied
// over the id and object type; it returns the new id.
func (s *Server) AddObject(kind string, fields map[string]any) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.id(kind)
	obj := map[string]any{"object": kind, "id": id}
	for k, v := range fields {
		obj[k] = v
	}
	s.objects[id] = obj
	return id
}
