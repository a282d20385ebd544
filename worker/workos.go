package worker

import (
	"context"
	"errors"
	"time"

	"github.com/workos-emailer/workos-emailer/workosapi"
)

// WorkOS is what the worker needs from the WorkOS API (workosapi.Client). Errors it returns may
// be *workosapi.APIError.
type WorkOS interface {
	ListEvents(ctx context.Context, req workosapi.ListRequest) (workosapi.Page, error)
	// Get reads an object emails are built from (a kinds.Kind's Object) with its secret parts.
	Get(ctx context.Context, object, id string) (workosapi.Object, error)
	OrganizationName(ctx context.Context, id string) (string, error)
	User(ctx context.Context, id string) (workosapi.Person, error)
}

func isNotFound(err error) bool {
	var apiErr *workosapi.APIError
	return errors.As(err, &apiErr) && apiErr.NotFound()
}

func retryAfterOf(err error) time.Duration {
	var apiErr *workosapi.APIError
	if errors.As(err, &apiErr) {
		return apiErr.RetryAfter
	}
	return 0
}
