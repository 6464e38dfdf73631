package main

import "testing"

func ptr(s string) *string { return &s }

func snapshotOf(t *testing.T, updates map[string]modelUpdate) map[string]*modelRoutes {
	t.Helper()
	metrics := newFrontMetrics([]float64{0.001, 1})
	models := map[string]*modelRoutes{}
	for name, update := range updates {
		models[name] = buildModel(name, update, metrics)
	}
	return models
}

var twoAliases = []routeUpdate{
	{Alias: "champion", Triton: "iris__v1", Version: 1},
	{Alias: "challenger", Triton: "iris__v2", Version: 2},
}

func TestDecideDefaultPinsAndUnknowns(t *testing.T) {
	models := snapshotOf(t, map[string]modelUpdate{"iris": {Routes: twoAliases, Default: "champion"}})
	cases := []struct {
		name string
		req  request
		want string // Triton model; "" = slow path
	}{
		{"default alias", request{target: inferTarget{model: "iris"}}, "iris__v1"},
		{"alias pin", request{target: inferTarget{model: "iris"}, alias: "challenger"}, "iris__v2"},
		{"version pin", request{target: inferTarget{model: "iris", version: "2"}}, "iris__v2"},
		{"version pin beats alias", request{target: inferTarget{model: "iris", version: "1"}, alias: "challenger"}, "iris__v1"},
		{"unknown model", request{target: inferTarget{model: "other"}}, ""},
		{"unknown alias", request{target: inferTarget{model: "iris"}, alias: "shadow"}, ""},
		{"unknown version", request{target: inferTarget{model: "iris", version: "3"}}, ""},
		{"version not a number", request{target: inferTarget{model: "iris", version: "v1"}}, ""},
		{"version with a leading zero", request{target: inferTarget{model: "iris", version: "01"}}, ""},
	}
	for _, c := range cases {
		got := decide(models, c.req)
		if (got == nil && c.want != "") || (got != nil && got.Triton != c.want) {
			t.Errorf("%s: got %+v, want %q", c.name, got, c.want)
		}
	}
}

func TestDecideWithoutDefaultGoesToTheSlowPath(t *testing.T) {
	models := snapshotOf(t, map[string]modelUpdate{"iris": {Routes: twoAliases[1:], Default: ""}})
	if got := decide(models, request{target: inferTarget{model: "iris"}}); got != nil {
		t.Fatalf("got %+v, want the slow path (it words the error)", got)
	}
}

func TestDecideFollowsTheBucketTable(t *testing.T) {
	buckets := make([]*string, bucketCount)
	for bucket := range buckets {
		if bucket < 30 {
			buckets[bucket] = ptr("challenger")
		} else if bucket < 60 {
			buckets[bucket] = ptr("gone") // an alias of the policy that is not served: the default
		}
	}
	models := snapshotOf(t, map[string]modelUpdate{"iris": {Routes: twoAliases, Default: "champion", Buckets: buckets}})
	// Buckets from testdata/client_buckets.json: alice 20, user:3 43, bob 25, a 99.
	for client, want := range map[string]string{"alice": "iris__v2", "bob": "iris__v2", "user:3": "iris__v1", "a": "iris__v1"} {
		got := decide(models, request{target: inferTarget{model: "iris"}, clientID: client})
		if got == nil || got.Triton != want {
			t.Errorf("client %q: got %+v, want %s", client, got, want)
		}
	}
}

func TestShadowSendsUnpinnedRequestsToTheSlowPath(t *testing.T) {
	models := snapshotOf(t, map[string]modelUpdate{"iris": {Routes: twoAliases, Default: "champion", Shadow: true}})
	if got := decide(models, request{target: inferTarget{model: "iris"}}); got != nil {
		t.Fatalf("unpinned: got %+v, want the slow path (the shadow copy is decided there)", got)
	}
	if got := decide(models, request{target: inferTarget{model: "iris"}, alias: "champion"}); got == nil {
		t.Fatal("a pinned request has no shadow copy: the fast path answers it")
	}
}

func TestVersionPinTakesTheFirstRouteInPythonsOrder(t *testing.T) {
	routes := []routeUpdate{{Alias: "b", Triton: "t1", Version: 1}, {Alias: "a", Triton: "t1", Version: 1}}
	models := snapshotOf(t, map[string]modelUpdate{"iris": {Routes: routes, Default: "a"}})
	for range 20 {
		if got := decide(models, request{target: inferTarget{model: "iris", version: "1"}}); got.Alias != "b" {
			t.Fatalf("got alias %q, want b (first in the table)", got.Alias)
		}
	}
}
