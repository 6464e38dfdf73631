package main

// The routing snapshot the Python replica pushes (gateway/grpc_front.py builds it from its routing table):
// per model its routes, the default route, the A/B bucket table and whether a shadow copy may be due; and the
// Triton endpoints out of rotation. Go decides only what needs no policy: the client's bucket, a pin by alias
// or version. Anything it cannot decide goes to the Python slow path.

import (
	"crypto/sha256"
	"math/rand/v2"
	"strconv"
)

// route is one served (model, alias).
type route struct {
	Model       string // registered model name
	Alias       string
	Version     int
	Triton      string // Triton model name
	versionText string
	series      *series
}

// modelRoutes is what the fast path knows of one registered model.
type modelRoutes struct {
	routes    map[string]*route
	byVersion map[string]*route
	fallback  *route   // the default alias's route; nil: the slow path answers (its error)
	buckets   []*route // 100 entries when an A/B policy applies (nil entry: the default); nil: none
	shadow    bool     // a shadow copy may be due: unpinned requests take the slow path
}

// modelUpdate is one model as Python sends it (JSON); routes in the order of Python's table (a version pin
// takes the first route with that version, as gateway.routing_table.ModelRoutes.by_version does).
type modelUpdate struct {
	Routes  []routeUpdate `json:"routes"`
	Default string        `json:"default"`
	Buckets []*string     `json:"buckets"`
	Shadow  bool          `json:"shadow"`
}

type routeUpdate struct {
	Alias   string `json:"alias"`
	Triton  string `json:"triton"`
	Version int    `json:"version"`
}

func buildModel(name string, update modelUpdate, metrics *frontMetrics) *modelRoutes {
	model := &modelRoutes{
		routes:    make(map[string]*route, len(update.Routes)),
		byVersion: make(map[string]*route, len(update.Routes)),
		shadow:    update.Shadow,
	}
	for _, served := range update.Routes {
		alias := served.Alias
		r := &route{Model: name, Alias: alias, Version: served.Version, Triton: served.Triton}
		r.versionText = strconv.Itoa(served.Version)
		r.series = metrics.series(name, alias, r.versionText)
		model.routes[alias] = r
		if _, taken := model.byVersion[r.versionText]; !taken {
			model.byVersion[r.versionText] = r
		}
	}
	model.fallback = model.routes[update.Default]
	if len(update.Buckets) == bucketCount {
		model.buckets = make([]*route, bucketCount)
		for bucket, alias := range update.Buckets {
			if alias != nil {
				model.buckets[bucket] = model.routes[*alias]
			}
		}
	}
	return model
}

const bucketCount = 100

// clientBucket is gateway.routing_policy.client_bucket: int(sha256(client_id).hexdigest(), 16) % 100, random
// without a client id.
func clientBucket(clientID string) int {
	if clientID == "" {
		return rand.IntN(bucketCount)
	}
	digest := sha256.Sum256([]byte(clientID))
	// 2^256 mod 100 folds the digest 8 bytes at a time: (hi*2^64 + lo) mod 100 without big numbers.
	var remainder uint64
	for offset := 0; offset < len(digest); offset += 8 {
		var word uint64
		for _, b := range digest[offset : offset+8] {
			word = word<<8 | uint64(b)
		}
		remainder = (remainder*pow64Mod100 + word%bucketCount) % bucketCount
	}
	return int(remainder)
}

// pow64Mod100 is 2^64 mod 100 (18446744073709551616).
const pow64Mod100 = 16

// request is what one ModelInfer asks for, from its message and metadata.
type request struct {
	target   inferTarget
	alias    string // pin by metadata
	clientID string
}

// decide is the route answering “req“, or nil when the slow path must decide (unknown model, alias or
// version, no default route, a shadow copy that may be due).
func decide(models map[string]*modelRoutes, req request) *route {
	model := models[req.target.model]
	if model == nil {
		return nil
	}
	if req.target.version != "" {
		return model.byVersion[req.target.version]
	}
	if req.alias != "" {
		return model.routes[req.alias]
	}
	if model.shadow {
		return nil
	}
	if model.buckets != nil {
		if chosen := model.buckets[clientBucket(req.clientID)]; chosen != nil {
			return chosen
		}
	}
	return model.fallback
}
