package sesfeedback

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"go.uber.org/zap"
)

// Recorder records an event on the delivery whose SES message id it names; *store.Store is one.
// found false: no record has that id (another sender's message, or pruned). Recording the same
// event twice changes nothing, so SQS's redeliveries are harmless.
type Recorder interface {
	RecordFeedback(ev Event) (rec Recorded, found bool, err error)
}

// Recorded names the delivery an event was recorded on.
type Recorded struct {
	EventID string
	Kind    string
}

// Observer counts recorded events (metrics); nil: none.
type Observer interface {
	Feedback(kind string, outcome Outcome)
}

// Options configure a Reader.
type Options struct {
	// QueueURL is mailer.ses.feedback_queue_url.
	QueueURL string
	// Region and Endpoint as for SES; Endpoint empty: AWS's.
	Region, Endpoint string
	// Credentials overrides the AWS default chain (files, tests).
	Credentials aws.CredentialsProvider
	Store       Recorder
	Observer    Observer
	Log         *zap.Logger
	// Wait is the long poll (at most 20 s, SQS's limit); RetryBase and RetryMax bound the
	// backoff after a failed receive. Zero: 20 s, 1 s, 1 min.
	Wait                time.Duration
	RetryBase, RetryMax time.Duration
}

// Reader long-polls the queue until its context ends.
type Reader struct {
	opts   Options
	client *sqs.Client

	mu       sync.Mutex
	lastOK   time.Time
	failure  string // why the last receive failed; "" after a good one
	failures int
}

// New builds the SQS client (the same AWS credential chain as SES).
func New(ctx context.Context, opts Options) (*Reader, error) {
	if opts.Wait <= 0 || opts.Wait > 20*time.Second {
		opts.Wait = 20 * time.Second
	}
	if opts.RetryBase <= 0 {
		opts.RetryBase = time.Second
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = time.Minute
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	var loadOpts []func(*config.LoadOptions) error
	if opts.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(opts.Region))
	}
	if opts.Credentials != nil {
		loadOpts = append(loadOpts, config.WithCredentialsProvider(opts.Credentials))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration for SQS: %w", err)
	}
	client := sqs.NewFromConfig(cfg, func(o *sqs.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
	})
	return &Reader{opts: opts, client: client}, nil
}

// Status says whether the queue answered its last receive, and if not, why.
func (r *Reader) Status() (ok bool, reason string, lastOK time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failure == "", r.failure, r.lastOK
}

// Run receives, records and deletes until ctx ends.
func (r *Reader) Run(ctx context.Context) {
	r.opts.Log.Info("reading SES feedback from SQS", zap.String("queue", r.opts.QueueURL))
	for ctx.Err() == nil {
		out, err := r.client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(r.opts.QueueURL), MaxNumberOfMessages: 10, WaitTimeSeconds: int32(r.opts.Wait / time.Second),
		})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !sleep(ctx, r.failed(err)) {
				return
			}
			continue
		}
		r.received()
		var done []types.DeleteMessageBatchRequestEntry
		for i, m := range out.Messages {
			if r.handle(m) {
				done = append(done, types.DeleteMessageBatchRequestEntry{Id: aws.String(fmt.Sprint(i)), ReceiptHandle: m.ReceiptHandle})
			}
		}
		if len(done) > 0 {
			r.delete(ctx, done)
		}
	}
}

// handle records one queue message; it reports whether the message may leave the queue.
func (r *Reader) handle(m types.Message) bool {
	log := r.opts.Log.With(zap.String("sqs_message_id", aws.ToString(m.MessageId)))
	ev, err := Parse([]byte(aws.ToString(m.Body)))
	if errors.Is(err, ErrForeign) {
		log.Warn("dropped a queue message that is not an SES event notification", zap.Error(err))
		return true
	}
	if ev.Outcome == Ignored {
		return true
	}
	rec, found, err := r.opts.Store.RecordFeedback(ev)
	if err != nil {
		// It stays in the queue and comes back after its visibility timeout.
		log.Error("recording SES feedback failed; the message stays in the queue", zap.String("ses_message_id", ev.MessageID),
			zap.Error(err))
		return false
	}
	if !found {
		log.Debug("SES feedback about a message with no delivery record (another sender's, or pruned)",
			zap.String("ses_message_id", ev.MessageID), zap.String("outcome", string(ev.Outcome)))
		return true
	}
	if r.opts.Observer != nil {
		r.opts.Observer.Feedback(rec.Kind, ev.Outcome)
	}
	fields := []zap.Field{zap.String("event_id", rec.EventID), zap.String("kind", rec.Kind), zap.String("outcome", string(ev.Outcome)),
		zap.String("detail", ev.Detail), zap.String("ses_message_id", ev.MessageID)}
	switch {
	case ev.Outcome == Bounced && ev.Permanent && signInKind(rec.Kind):
		log.Warn("a sign-in email bounced for good: its recipient cannot sign in this way; the address does not take mail", fields...)
	case ev.Outcome == Complaint || ev.Outcome == Bounced || ev.Outcome == Rejected:
		log.Info("SES feedback", fields...)
	default:
		log.Debug("SES feedback", fields...)
	}
	return true
}

// signInKind: a bounce of these leaves someone unable to sign in or reset.
func signInKind(kind string) bool {
	switch kind {
	case "magic_auth", "password_reset", "magic_link", "email_verification", "radar_challenge":
		return true
	}
	return false
}

func (r *Reader) delete(ctx context.Context, entries []types.DeleteMessageBatchRequestEntry) {
	out, err := r.client.DeleteMessageBatch(context.WithoutCancel(ctx), &sqs.DeleteMessageBatchInput{
		QueueUrl: aws.String(r.opts.QueueURL), Entries: entries})
	switch {
	case err != nil:
		r.opts.Log.Warn("deleting recorded SES feedback from the queue failed; it comes back and is recorded again, harmlessly",
			zap.Error(err))
	case len(out.Failed) > 0:
		r.opts.Log.Warn("SQS refused to delete some recorded SES feedback; it comes back and is recorded again, harmlessly",
			zap.Int("failed", len(out.Failed)))
	}
}

func (r *Reader) received() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failure != "" {
		r.opts.Log.Info("the SES feedback queue answers again", zap.Int("failures", r.failures))
	}
	r.failure, r.failures, r.lastOK = "", 0, time.Now()
}

// failed notes a failed receive and returns the wait before the next.
func (r *Reader) failed(err error) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures++
	r.failure = "receiving from the SES feedback queue failed: " + err.Error()
	d := min(r.opts.RetryBase<<min(r.failures-1, 20), r.opts.RetryMax)
	d = d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
	if r.failures == 1 || r.failures%10 == 0 {
		r.opts.Log.Warn("receiving from the SES feedback queue failed; retrying", zap.Error(err), zap.Int("failures", r.failures),
			zap.Duration("retry_in", d))
	}
	return d
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
