package main

// What a Triton failure on the fast path means for the caller: Go's copy of gateway.triton_grpc.upstream_error
// and gateway.grpc_api.status_code, kept equal by the shared vectors of testdata/upstream_errors.json (checked
// by upstream_test.go here and by tests/unit/gateway/test_grpc_front.py against the Python functions).

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
)

// upstreamError is one classified failure.
type upstreamError struct {
	Status      int        `json:"status"`       // the HTTP status it stands for (gateway_requests_total's code)
	Code        codes.Code `json:"grpc_code"`    // what the caller gets
	Message     string     `json:"message"`      // what the caller reads
	Outcome     string     `json:"outcome"`      // gateway_errors_total's reason
	RetryReason string     `json:"retry_reason"` // not empty: Triton did not run it, another endpoint may answer
}

// Triton's words for "that model is not loaded (or not ready) here" (gateway.triton_grpc._NOT_SERVED_HERE).
var notServedHere = []string{"unknown model", "not found", "no available versions", "is not ready"}

// The words of a connection that never got through, from gRPC's C core and from grpc-go
// (gateway.triton_grpc.UNREACHABLE).
var unreachable = []string{"failed to connect", "error while dialing"}

// Messages that are the caller's fault whatever the code (gateway.upstream.CALLER_FAULTS).
var callerFaults = []string{
	"json", "failed to parse", "unable to parse", "unexpected inference input", "contains nan", "contains infinity",
}

// codeNames are the status codes as Python's grpc.StatusCode names them (its message when Triton gave none).
var codeNames = map[codes.Code]string{
	codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN", codes.InvalidArgument: "INVALID_ARGUMENT",
	codes.DeadlineExceeded: "DEADLINE_EXCEEDED", codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
	codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED", codes.OutOfRange: "OUT_OF_RANGE",
	codes.Unimplemented: "UNIMPLEMENTED", codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE",
	codes.DataLoss: "DATA_LOSS", codes.Unauthenticated: "UNAUTHENTICATED",
}

const maxMessageChars = 2000

func containsAny(text string, words []string) bool {
	for _, word := range words {
		if strings.Contains(text, word) {
			return true
		}
	}
	return false
}

// classify is upstream_error(code, details) followed by status_code.
func classify(code codes.Code, details string) upstreamError {
	message := details
	if message == "" {
		message = codeNames[code]
	}
	if utf8.RuneCountInString(message) > maxMessageChars {
		message = string([]rune(message)[:maxMessageChars])
	}
	lowered := strings.ToLower(message)
	switch {
	case code == codes.DeadlineExceeded:
		return upstreamError{504, codes.DeadlineExceeded, "Triton did not answer in time: " + message, "timeout", ""}
	case code == codes.NotFound || (code == codes.Unavailable && containsAny(lowered, notServedHere)):
		return upstreamError{502, codes.Unavailable, "Triton does not serve the routed model: " + message,
			"triton_error", "unknown_model"}
	case code == codes.Unavailable:
		reason := ""
		if containsAny(lowered, unreachable) {
			reason = "unreachable"
		}
		return upstreamError{503, codes.Unavailable, "Triton is unavailable: " + message, "unavailable", reason}
	case code == codes.InvalidArgument || containsAny(lowered, callerFaults):
		return upstreamError{400, codes.InvalidArgument, message, "bad_request", ""}
	}
	return upstreamError{502, codes.Internal, fmt.Sprintf("Triton error (%s): %s", codeNames[code], message),
		"triton_error", ""}
}
