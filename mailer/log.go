package mailer

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"go.uber.org/zap"
)

// Log "sends" by writing a log line with the event, kind and subject. It never logs the bodies,
// which carry codes and links; the recipient appears only at debug level.
type Log struct {
	Logger *zap.Logger
}

// Send logs m's metadata and returns a random message id.
func (l *Log) Send(_ context.Context, m Message) (string, error) {
	var id [8]byte
	_, _ = rand.Read(id[:])
	msgID := "log-" + hex.EncodeToString(id[:])
	l.Logger.Info("email (log driver, not sent)",
		zap.String("event_id", m.EventID), zap.String("kind", m.Kind),
		zap.String("subject", m.Subject), zap.String("message_id", msgID))
	l.Logger.Debug("email recipient", zap.String("event_id", m.EventID), zap.String("to", m.To))
	return msgID, nil
}
