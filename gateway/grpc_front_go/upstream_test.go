package main

import (
	"encoding/json"
	"os"
	"testing"

	"google.golang.org/grpc/codes"
)

// The same vectors as tests/unit/gateway/test_grpc_front.py checks against gateway.triton_grpc.upstream_error
// and gateway.grpc_api.status_code.
func TestClassifyMatchesPythonVectors(t *testing.T) {
	raw, err := os.ReadFile("testdata/upstream_errors.json")
	if err != nil {
		t.Fatal(err)
	}
	var document struct {
		Vectors []struct {
			Code    codes.Code `json:"code"`
			Details string     `json:"details"`
			upstreamError
		} `json:"vectors"`
	}
	if err := json.Unmarshal(raw, &document); err != nil {
		t.Fatal(err)
	}
	if len(document.Vectors) < 15 {
		t.Fatalf("only %d vectors", len(document.Vectors))
	}
	for _, vector := range document.Vectors {
		if got := classify(vector.Code, vector.Details); got != vector.upstreamError {
			t.Errorf("classify(%v, %.80q) = %+v, Python says %+v", vector.Code, vector.Details, got, vector.upstreamError)
		}
	}
}
