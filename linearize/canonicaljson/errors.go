package canonicaljson

import "fmt"

// SyntaxError says what was wrong with the input and at which byte offset. Unwrap gives one of the package's sentinel
// errors, so errors.Is(err, ErrFloat) works.
type SyntaxError struct {
	Offset int
	Err    error
	Detail string
}

func (e *SyntaxError) Error() string {
	if e.Detail != "" {
		return fmt.Sprintf("%s at offset %d: %s", e.Err.Error(), e.Offset, e.Detail)
	}
	return fmt.Sprintf("%s at offset %d", e.Err.Error(), e.Offset)
}

func (e *SyntaxError) Unwrap() error { return e.Err }
