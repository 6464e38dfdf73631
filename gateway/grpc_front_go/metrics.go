package main

// What the fast path answered, aggregated for the Python replica's /metrics (gateway.grpc_front merges it into
// gateway_requests_total, gateway_errors_total and gateway_request_duration_seconds, protocol "grpc"). Series
// are created when a snapshot names a route, so their labels are those of the routing table: bounded.

import (
	"math"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// series counts one route's answers.
type series struct {
	answered atomic.Uint64 // code 200
	latency  *histogram
	mu       sync.Mutex
	failures map[failureLabels]uint64
}

// failureLabels are a failure's code (HTTP status) and reason, as gateway_requests_total and
// gateway_errors_total label it.
type failureLabels struct {
	status  int
	outcome string
}

// failed counts one failure answered on the fast path (a status of 0: the caller went away, not counted).
func (s *series) failed(status int, outcome string) {
	if status == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failures == nil {
		s.failures = map[failureLabels]uint64{}
	}
	s.failures[failureLabels{status, outcome}]++
}

type histogram struct {
	bounds  []float64       // upper bounds in seconds, ascending (+Inf implicit)
	counts  []atomic.Uint64 // per bucket, not cumulative; the last one is +Inf
	sumNano atomic.Uint64
}

func (h *histogram) observe(elapsed time.Duration) {
	seconds := elapsed.Seconds()
	index := sort.SearchFloat64s(h.bounds, seconds) // first bound >= seconds: le is inclusive
	h.counts[index].Add(1)
	h.sumNano.Add(uint64(elapsed.Nanoseconds()))
}

type frontMetrics struct {
	bounds  []float64
	mu      sync.Mutex
	routes  map[[3]string]*series
	latency map[string]*histogram
}

func newFrontMetrics(bounds []float64) *frontMetrics {
	return &frontMetrics{bounds: bounds, routes: map[[3]string]*series{}, latency: map[string]*histogram{}}
}

// series is the (shared) series of a route, made on first use.
func (m *frontMetrics) series(model, alias, version string) *series {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := [3]string{model, alias, version}
	found := m.routes[key]
	if found == nil {
		latency := m.latency[model]
		if latency == nil {
			latency = &histogram{bounds: m.bounds, counts: make([]atomic.Uint64, len(m.bounds)+1)}
			m.latency[model] = latency
		}
		found = &series{latency: latency}
		m.routes[key] = found
	}
	return found
}

type countReport struct {
	Model   string `json:"model"`
	Alias   string `json:"alias"`
	Version string `json:"version"`
	Label   string `json:"label"` // the code (requests) or the reason (errors)
	Value   uint64 `json:"value"`
}

type latencyReport struct {
	Model   string   `json:"model"`
	Buckets []uint64 `json:"buckets"` // cumulative, one per bound
	Count   uint64   `json:"count"`
	Sum     float64  `json:"sum"`
}

type metricsReport struct {
	Metrics  int64           `json:"metrics"`
	Requests []countReport   `json:"requests"`
	Errors   []countReport   `json:"errors"`
	Latency  []latencyReport `json:"latency"`
}

// report is every series with something counted, cumulative since start.
func (m *frontMetrics) report(id int64) metricsReport {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := metricsReport{Metrics: id, Requests: []countReport{}, Errors: []countReport{}, Latency: []latencyReport{}}
	for key, s := range m.routes {
		if answered := s.answered.Load(); answered > 0 {
			out.Requests = append(out.Requests, countReport{key[0], key[1], key[2], "200", answered})
		}
		byStatus, byOutcome := map[string]uint64{}, map[string]uint64{}
		s.mu.Lock()
		for labels, count := range s.failures {
			byStatus[strconv.Itoa(labels.status)] += count
			byOutcome[labels.outcome] += count
		}
		s.mu.Unlock()
		for code, count := range byStatus {
			out.Requests = append(out.Requests, countReport{key[0], key[1], key[2], code, count})
		}
		for reason, count := range byOutcome {
			out.Errors = append(out.Errors, countReport{key[0], key[1], key[2], reason, count})
		}
	}
	for model, h := range m.latency {
		var running uint64
		buckets := make([]uint64, len(h.bounds))
		for index := range h.bounds {
			running += h.counts[index].Load()
			buckets[index] = running
		}
		count := running + h.counts[len(h.bounds)].Load()
		if count == 0 {
			continue
		}
		sum := float64(h.sumNano.Load()) / 1e9
		out.Latency = append(out.Latency, latencyReport{model, buckets, count, math.Round(sum*1e9) / 1e9})
	}
	return out
}
