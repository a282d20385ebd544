package mailer

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/sesv2"
)

// SendQuota is the account's sending quota as SES GetAccount reports it.
type SendQuota struct {
	// MaxSendRate is the most recipients per second the account may send to.
	MaxSendRate float64
	// Max24HourSend is the most recipients per rolling 24 hours.
	Max24HourSend float64
	// SentLast24Hours is how many recipients were sent to in the last 24 hours.
	SentLast24Hours float64
	// SendingEnabled is false when SES has paused sending for the account.
	SendingEnabled bool
	// Sandbox is true when the account has no production access (ProductionAccessEnabled
	// false): SES delivers only to verified addresses and domains, and rejects other
	// recipients as "not verified".
	Sandbox bool
}

// Quota calls GetAccount once.
func (s *SES) Quota(ctx context.Context) (SendQuota, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	out, err := s.client.GetAccount(ctx, &sesv2.GetAccountInput{})
	if err != nil {
		return SendQuota{}, fmt.Errorf("SES GetAccount: %w", err)
	}
	if out.SendQuota == nil {
		return SendQuota{}, errors.New("SES GetAccount: answer without SendQuota")
	}
	return SendQuota{
		MaxSendRate:     out.SendQuota.MaxSendRate,
		Max24HourSend:   out.SendQuota.Max24HourSend,
		SentLast24Hours: out.SendQuota.SentLast24Hours,
		SendingEnabled:  out.SendingEnabled,
		Sandbox:         !out.ProductionAccessEnabled,
	}, nil
}
