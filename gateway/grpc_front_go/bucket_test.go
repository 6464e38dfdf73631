package main

import (
	"encoding/json"
	"os"
	"testing"
)

// The same vectors as tests/unit/gateway/test_grpc_front.py checks against gateway.routing_policy.client_bucket.
func TestClientBucketMatchesPythonVectors(t *testing.T) {
	raw, err := os.ReadFile("testdata/client_buckets.json")
	if err != nil {
		t.Fatal(err)
	}
	var document struct {
		Vectors []struct {
			ClientID string `json:"client_id"`
			Bucket   int    `json:"bucket"`
		} `json:"vectors"`
	}
	if err := json.Unmarshal(raw, &document); err != nil {
		t.Fatal(err)
	}
	if len(document.Vectors) < 10 {
		t.Fatalf("only %d vectors", len(document.Vectors))
	}
	for _, vector := range document.Vectors {
		if got := clientBucket(vector.ClientID); got != vector.Bucket {
			t.Errorf("clientBucket(%q) = %d, Python says %d", vector.ClientID, got, vector.Bucket)
		}
	}
}

func TestClientBucketWithoutIDIsRandomInRange(t *testing.T) {
	seen := map[int]bool{}
	for range 2000 {
		bucket := clientBucket("")
		if bucket < 0 || bucket >= bucketCount {
			t.Fatalf("bucket %d out of range", bucket)
		}
		seen[bucket] = true
	}
	if len(seen) < 50 {
		t.Fatalf("only %d distinct buckets in 2000 draws", len(seen))
	}
}
