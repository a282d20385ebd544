package main

import (
	"context"
	"net/url"
	"strings"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"go.uber.org/zap"

	"github.com/workos-emailer/workos-emailer/internal/config"
	"github.com/workos-emailer/workos-emailer/sesfeedback"
	"github.com/workos-emailer/workos-emailer/store"
)

// newFeedbackReader builds the SES feedback reader (sesfeedback) when
// mailer.ses.feedback_queue_url is set; nil when it is not. It uses the AWS credentials SES
// uses. A queue URL on another host than AWS's (an emulator, a test) is also the endpoint.
func newFeedbackReader(ctx context.Context, cfg *config.Config, st store.Backend, obs *daemonObs, log *zap.Logger) (*sesfeedback.Reader, error) {
	q := cfg.Mailer.SES.FeedbackQueueURL
	if q == "" {
		return nil, nil
	}
	opts := sesfeedback.Options{QueueURL: q, Region: cfg.Mailer.SES.Region, Store: feedbackRecorder{st}, Observer: obs.metrics,
		Log: log.Named("ses_feedback")}
	if u, err := url.Parse(q); err == nil && !strings.HasSuffix(u.Hostname(), ".amazonaws.com") {
		opts.Endpoint = u.Scheme + "://" + u.Host
	}
	if c := cfg.AWSCredentials(); c != nil {
		opts.Credentials = credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, c.SessionToken)
	}
	r, err := sesfeedback.New(ctx, opts)
	if err != nil {
		return nil, config.Error{Err: err}
	}
	return r, nil
}

// feedbackRecorder records SES's reports on the store's records.
type feedbackRecorder struct{ st store.Backend }

func (r feedbackRecorder) RecordFeedback(ev sesfeedback.Event) (sesfeedback.Recorded, bool, error) {
	id, kind, found, err := r.st.RecordFeedback(ev.MessageID, store.FeedbackReport{Outcome: string(ev.Outcome), At: ev.At,
		Detail: ev.Detail, Permanent: ev.Permanent})
	return sesfeedback.Recorded{EventID: id, Kind: kind}, found, err
}
