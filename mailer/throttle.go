package mailer

import "errors"

// Throttled reports whether err is SES refusing a send because it came too fast
// (TooManyRequestsException and the other names AWS uses for throttling): the message was not
// accepted, and the sender should slow down.
func Throttled(err error) bool {
	var se *SendError
	return errors.As(err, &se) && se.Class == Retry && sesThrottled[se.Code]
}
