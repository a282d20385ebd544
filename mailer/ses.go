package mailer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sesv2"
	"github.com/aws/aws-sdk-go-v2/service/sesv2/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
)

// SESOptions configures the SES transport.
type SESOptions struct {
	Region           string
	Endpoint         string
	ConfigurationSet string
	From             string
	ReplyTo          string
	// ListUnsubscribe is mailer.list_unsubscribe; "" adds no header.
	ListUnsubscribe string
	// Timeout bounds one SendEmail call. Default 30s.
	Timeout time.Duration
	// HTTPClient overrides the HTTP client (tests).
	HTTPClient *http.Client
	// Credentials overrides the AWS default credential chain (secrets read from files; tests).
	Credentials aws.CredentialsProvider

	// apiOptions are added to every SES call's middleware stack (tests observe the SDK there).
	apiOptions []func(*middleware.Stack) error
	// checkBackoff replaces the backoff between CheckSenders' retries (tests: no waiting).
	checkBackoff retry.BackoffDelayer
}

// SES sends through Amazon SES v2 SendEmail.
type SES struct {
	client *sesv2.Client
	opts   SESOptions
}

// NewSES builds an SES v2 client from the AWS default configuration chain. The SDK's own retryer
// is disabled: SendEmail has no idempotency key, so a retry after a timeout could deliver the
// message twice. Retry decisions are taken by the caller from the error's Class.
func NewSES(ctx context.Context, opts SESOptions) (*SES, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	var loadOpts []func(*config.LoadOptions) error
	if opts.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(opts.Region))
	}
	if opts.Credentials != nil {
		loadOpts = append(loadOpts, config.WithCredentialsProvider(opts.Credentials))
	}
	if opts.HTTPClient != nil {
		loadOpts = append(loadOpts, config.WithHTTPClient(opts.HTTPClient))
	} else {
		loadOpts = append(loadOpts, config.WithHTTPClient(sesHTTPClient()))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return nil, errors.New("no AWS region: set mailer.ses.region or AWS_REGION")
	}
	// SES wants a display name that is not ASCII as an encoded-word.
	if opts.From, err = HeaderAddress(opts.From); err != nil {
		return nil, fmt.Errorf("mailer.from: %w", err)
	}
	if opts.ReplyTo != "" {
		if opts.ReplyTo, err = HeaderAddress(opts.ReplyTo); err != nil {
			return nil, fmt.Errorf("mailer.reply_to: %w", err)
		}
	}
	client := sesv2.NewFromConfig(cfg, func(o *sesv2.Options) {
		o.Retryer = aws.NopRetryer{}
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
		// Only the SES client's own requests go through sesRequests; the credential providers
		// (instance metadata, container endpoint, STS) keep cfg.HTTPClient.
		o.HTTPClient = sesRequests{o.HTTPClient}
		o.APIOptions = append(o.APIOptions, opts.apiOptions...)
	})
	return &SES{client: client, opts: opts}, nil
}

// sesHTTPClient is the SDK's default client with room for the sends in flight: the default
// keeps 10 idle connections per host, so with more deliveries than that in flight, sends would
// keep opening (and TLS-handshaking) new connections. A write buffer that holds a typical
// request puts it on the wire in one write instead of one per 4 KiB.
func sesHTTPClient() *awshttp.BuildableClient {
	return awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
		t.MaxIdleConnsPerHost = maxIdleSESConns
		t.WriteBufferSize = 16 << 10
	})
}

// maxIdleSESConns covers delivery.concurrency (up to 64 is common) and GetAccount.
const maxIdleSESConns = 100

// CheckCredentials resolves AWS credentials once, so a daemon without any fails at start with
// a clear message instead of failing every send.
func (s *SES) CheckCredentials(ctx context.Context) error {
	if _, err := s.client.Options().Credentials.Retrieve(ctx); err != nil {
		return fmt.Errorf("resolve AWS credentials (env, shared config/profile or instance role): %w", err)
	}
	return nil
}

// Send calls SendEmail once. It returns the SES MessageId or a *SendError.
func (s *SES) Send(ctx context.Context, m Message) (string, error) {
	from, replyTo := s.opts.From, s.opts.ReplyTo
	var err error
	if m.Sender.From != "" {
		if from, err = HeaderAddress(m.Sender.From); err != nil {
			return "", &SendError{Class: Permanent, Err: fmt.Errorf("the organization's from: %w", err)}
		}
	}
	if m.Sender.ReplyTo != "" {
		if replyTo, err = HeaderAddress(m.Sender.ReplyTo); err != nil {
			return "", &SendError{Class: Permanent, Err: fmt.Errorf("the organization's reply_to: %w", err)}
		}
	}
	in := &sesv2.SendEmailInput{
		FromEmailAddress: aws.String(from),
		Destination:      &types.Destination{ToAddresses: []string{m.To}},
		Content: &types.EmailContent{Simple: &types.Message{
			Subject: &types.Content{Data: aws.String(m.Subject), Charset: aws.String("UTF-8")},
			Body: &types.Body{
				Html: &types.Content{Data: aws.String(m.HTML), Charset: aws.String("UTF-8")},
				Text: &types.Content{Data: aws.String(m.Text), Charset: aws.String("UTF-8")},
			},
		}},
		EmailTags: []types.MessageTag{
			{Name: aws.String("event_id"), Value: aws.String(tagValue(m.EventID))},
			{Name: aws.String("kind"), Value: aws.String(tagValue(m.Kind))},
		},
	}
	if replyTo != "" {
		in.ReplyToAddresses = []string{replyTo}
	}
	for _, h := range ListUnsubscribeHeaders(s.opts.ListUnsubscribe) {
		in.Content.Simple.Headers = append(in.Content.Simple.Headers, types.MessageHeader{Name: aws.String(h[0]), Value: aws.String(h[1])})
	}
	if set := orDefault(m.Sender.ConfigurationSet, s.opts.ConfigurationSet); set != "" {
		in.ConfigurationSetName = aws.String(set)
	}

	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	// Credentials first: the SDK resolves them inside SendEmail, and a provider that cannot
	// (an instance role's or a container endpoint's refresh failing) is a problem of the
	// account's access, not of this message. The cache makes this free while they are valid.
	if _, err := s.client.Options().Credentials.Retrieve(ctx); err != nil {
		return "", &SendError{Class: Paused, Code: CodeCredentialsUnavailable,
			Err: redacted{fmt.Errorf("resolve AWS credentials (env, shared config/profile or instance role): %w", err)}}
	}
	var wrote atomic.Bool
	out, err := s.client.SendEmail(context.WithValue(ctx, wroteKey{}, &wrote), in)
	if err != nil {
		return "", onlyRecipientUnverified(classifySES(err, wrote.Load()), from)
	}
	if out.MessageId == nil || *out.MessageId == "" {
		return "", &SendError{Class: Ambiguous, Err: errors.New("SES answered without a MessageId")}
	}
	return *out.MessageId, nil
}

// wroteKey marks a SendEmail call's context with where sesRequests reports that the request
// reached the connection in full.
type wroteKey struct{}

// sesRequests is the SES client's HTTP client: it tells "never sent" from "maybe sent", and
// keeps net/http from closing a connection under an arriving answer.
type sesRequests struct{ base sesv2.HTTPClient }

func (c sesRequests) Do(req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Body != http.NoBody {
		req = req.WithContext(req.Context()) // a shallow copy: the SDK keeps its own request
		req.Body = readOnlyBody{req.Body}
	}
	// The trace sits on this request only. Put on SendEmail's context, it also saw the
	// credential providers' requests, which run inside SendEmail with the same context: a
	// refresh that failed after its request was written made a send that never reached SES
	// look as if SES might have accepted it.
	if wrote, ok := req.Context().Value(wroteKey{}).(*atomic.Bool); ok {
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			WroteRequest: func(info httptrace.WroteRequestInfo) {
				if info.Err == nil {
					wrote.Store(true)
				}
			},
		}))
	}
	return c.base.Do(req)
}

// readOnlyBody hides the request body's WriteTo from net/http. smithy-go closes the body as
// soon as the answer's headers are in, and its closed body's WriteTo returns io.EOF, where
// io.WriterTo must return nil at the end of the data. net/http's write loop, after sending
// Content-Length bytes, copies the rest of the body to io.Discard to check that nothing is
// left; when that copy runs after the close it goes through WriteTo, gets io.EOF as an error
// and closes the connection while the answer's body is still arriving: a message SES accepted
// looked unanswered (ambiguous, and a duplicate under on_ambiguous: resend). Through Read, a
// closed body is a plain end of data.
type readOnlyBody struct{ io.ReadCloser }

// tagValue keeps SES tag values within their allowed alphabet (ASCII letters, digits, _ - . @).
func tagValue(s string) string {
	b := []byte(s)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == '@'
		if !ok {
			b[i] = '_'
		}
	}
	if len(b) > 256 {
		b = b[:256]
	}
	return string(b)
}

var (
	sesPermanent = map[string]bool{
		"MessageRejected":     true, // but "not verified" (notVerified): paused
		"BadRequestException": true,
	}
	// Throttling under the names AWS uses for it (SES v2 answers 429 TooManyRequestsException;
	// the AWS-wide ThrottlingException and SES v1's Throttling come as 400): an outage, not the
	// message's fault.
	sesThrottled = map[string]bool{
		"TooManyRequestsException":  true,
		"ThrottlingException":       true,
		"Throttling":                true,
		"ThrottledException":        true,
		"RequestThrottled":          true,
		"RequestThrottledException": true,
	}
	// Errors that no single message caused and no retry of one message fixes.
	sesPaused = map[string]bool{
		"AccountSuspendedException":   true,
		"SendingPausedException":      true,
		"NotFoundException":           true, // configuration set or identity is missing
		"AccessDeniedException":       true,
		"UnrecognizedClientException": true,
		"InvalidClientTokenId":        true,
		"SignatureDoesNotMatch":       true,
		"MissingAuthenticationToken":  true,
		// MailFromDomainNotVerifiedException and MessageRejected "not verified": classifySES.
	}
)

// notVerified reports whether a MessageRejected answer says an identity is not verified: "Email
// address is not verified. The following identities failed the check in region US-EAST-1: ...".
// SES answers that for a From address (or domain) that is not a verified identity, and, while
// the account is in the sandbox, for every recipient that is not one. Neither is the message's
// fault, and neither resolves itself by resending it: sending pauses until a person verifies
// the identity or the account gets production access. Other rejections (content, a
// DMARC-refused From) stay permanent.
func notVerified(msg string) bool {
	msg = strings.ToLower(msg)
	return strings.Contains(msg, "not verified") || strings.Contains(msg, "failed the check in region")
}

// PauseReason of a "not verified" rejection and of MailFromDomainNotVerifiedException.
const (
	pauseUnverified = "SES refuses an identity that is not verified: the sender's, or while the account is in the SES sandbox a recipient's (MessageRejected)"
	pauseMailFrom   = "SES says the sending domain or its custom MAIL FROM domain is not verified (MailFromDomainNotVerifiedException)"
)

// onlyRecipientUnverified narrows a "not verified" pause to this message when SES names the
// identities that failed and the sender is not among them: the account is in the sandbox and only
// this recipient is not verified. Pausing every email for one such address would hold up the
// rest, which go out, and end the pause again at once; the one email cannot be sent until the
// account leaves the sandbox, so it is permanent. Without a list, sending pauses.
func onlyRecipientUnverified(err error, from string) error {
	var se *SendError
	if !errors.As(err, &se) || se.pauseReason != pauseUnverified {
		return err
	}
	var ans sesAnswer
	if !errors.As(se.Err, &ans) {
		return err
	}
	_, list, ok := strings.Cut(ans.msg, "failed the check in region ")
	if _, list, ok = strings.Cut(list, ": "); !ok || strings.TrimSpace(list) == "" {
		return err
	}
	addr := from
	if a, perr := ParseSender(from); perr == nil {
		addr = a.Address
	}
	addr = strings.ToLower(addr)
	_, domain, _ := strings.Cut(addr, "@")
	for _, id := range strings.Split(list, ",") {
		id = strings.ToLower(strings.TrimSpace(id))
		if id == addr || id == domain || strings.HasSuffix(domain, "."+id) {
			return err // the sender itself: every email fails
		}
	}
	se.Class, se.pauseReason = Permanent, ""
	se.Err = fmt.Errorf("the recipient is not a verified SES identity, and the account is in the SES sandbox, where only "+
		"verified recipients receive mail (request production access in the SES console): %w", se.Err)
	return se
}

// classifySES turns an SDK error into a SendError. wrote says whether the HTTP request was
// written to the connection: if it was and no answer came back, SES may have accepted it. The
// SendError's text has addresses redacted (SES echoes the recipient in some of its messages);
// ErrorDetail has it in full.
func classifySES(sdkErr error, wrote bool) error {
	err := error(redacted{sdkErr})
	status := 0
	var respErr *awshttp.ResponseError
	if errors.As(err, &respErr) {
		status = respErr.HTTPStatusCode()
	}
	if status >= 200 && status < 300 {
		// SES answered success but the answer could not be read (truncated, timed out mid-body):
		// it has most likely accepted the message.
		return &SendError{Class: Ambiguous, Err: fmt.Errorf("unreadable success answer: %w", err)}
	}
	unavailable := status == http.StatusTooManyRequests || status == http.StatusBadGateway ||
		status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout
	var apiErr smithy.APIError
	if status > 0 && errors.As(err, &apiErr) {
		code := apiErr.ErrorCode()
		// SES's own words, without the SDK's "operation error SESv2: SendEmail, https response
		// error StatusCode: 400, RequestID: ..." before them; ErrorDetail still has it all.
		se := &SendError{Code: code, Err: sesAnswer{status: status, msg: apiErr.ErrorMessage(), err: err}}
		switch {
		case code == "MessageRejected" && notVerified(apiErr.ErrorMessage()):
			se.Class, se.pauseReason = Paused, pauseUnverified
		case code == "MailFromDomainNotVerifiedException":
			// "The sending domain isn't verified" (the API reference); SES also answers it for a
			// custom MAIL FROM domain whose MX record it cannot read. Every message from that
			// sender fails the same way until a person fixes the identity or its DNS.
			se.Class, se.pauseReason = Paused, pauseMailFrom
		case sesPermanent[code]:
			se.Class = Permanent
		case sesPaused[code]:
			se.Class = Paused
		default:
			// Throttling, 5xx, and unknown 4xx are answers: SES did not accept the message, so a
			// retry cannot duplicate it; unknown 4xx stay bounded by max_attempts.
			se.Class = Retry
			se.Unavailable = unavailable || sesThrottled[code]
		}
		return se
	}
	if status > 0 {
		return &SendError{Class: Retry, Unavailable: unavailable, Err: err}
	}
	if !wrote {
		return &SendError{Class: Retry, Unavailable: true, Err: fmt.Errorf("request not sent: %w", err)}
	}
	return &SendError{Class: Ambiguous, Err: fmt.Errorf("no answer after the request was sent: %w", err)}
}

// sesAnswer is an error answer of SES as its reason reads: the status and SES's message.
type sesAnswer struct {
	status int
	msg    string
	err    error // redacted: the SDK's error
}

func (a sesAnswer) Error() string {
	if a.msg == "" {
		return fmt.Sprintf("SES answered %d", a.status)
	}
	return RedactAddresses(fmt.Sprintf("SES answered %d: %s", a.status, a.msg))
}
func (a sesAnswer) Unwrap() error { return a.err }
