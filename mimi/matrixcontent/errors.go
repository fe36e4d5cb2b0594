package matrixcontent

import "errors"

// Sentinel errors of the mapping; callers log and skip the message.
var (
	ErrUnknownTarget      = errors.New("the message it refers to is not known")
	ErrNoReactionTarget   = errors.New("reaction without a message it reacts to")
	ErrUnsupportedContent = errors.New("no part of the message can be shown in Matrix")
	ErrNoMedia            = errors.New("media message but no way to re-host media")
	ErrUnsupportedEvent   = errors.New("event type or msgtype not mapped to MIMI")
	ErrEmptyMessage       = errors.New("message has no content")
)
