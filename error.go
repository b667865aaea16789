package spinbroker

import (
	"errors"
	"fmt"
)

// Error codes of API version 1. Each is the `code` of an error body and maps to
// one HTTP status in the HTTP layer; everywhere else errors are tested by code.
const (
	EINVALID      = "invalid_request"    // 400: malformed JSON, wrong types, bad names or limits
	EUNKNOWNDEP   = "unknown_dependency" // 400: a dependency names no existing command or key
	EEMPTY        = "empty_package"      // 400: enqueue of a package with no commands
	EUNAUTHORIZED = "unauthorized"       // 401: auth is on and no valid token was given
	EFORBIDDEN    = "forbidden"          // 403: the token may not do this
	ENOTFOUND     = "not_found"          // 404: no such package, command or route
	EMETHOD       = "method_not_allowed" // 405: known path, wrong method
	ECONFLICT     = "conflict"           // 409: the state forbids it
	ESTALE        = "stale_lease"        // 409: the lease token is not the command's current lease
	ETOOLARGE     = "too_large"          // 413: body over the limit
	EUNAVAILABLE  = "unavailable"        // 503: shutting down, or the database is unavailable
	EINTERNAL     = "internal"           // 500: a bug; details are logged, never answered
)

// Error is an error a user can act on: a code from the list above and a
// sentence that says what went wrong.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error implements the error interface.
func (e *Error) Error() string {
	return fmt.Sprintf("spinbroker: %s: %s", e.Code, e.Message)
}

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code string, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of err if it is (or wraps) an *Error, and
// EINTERNAL for anything else, including nil's absence of a code ("").
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the user-facing message of err: the message of an
// *Error, or a generic sentence that hides internals.
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// ErrorBody is the JSON body of every non-2xx answer.
type ErrorBody struct {
	Error *Error `json:"error"`
}
