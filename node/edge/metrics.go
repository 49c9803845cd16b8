// The edge's own Prometheus metrics, rendered as text and pushed to the node over the
// hand-off socket (a METRICS frame every second), which appends them to its /metrics:
// requests by method and code, latency, hand-off batch sizes, requests in flight to the
// node, refusals for overload, relays to the leader.
package main

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

var latencyBuckets = []float64{
	0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5,
}

var batchBuckets = []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}

type histogram struct {
	buckets []float64
	counts  []atomic.Uint64
	sumNs   atomic.Uint64 // sum * 1e9 for latencies, plain sum for sizes
	count   atomic.Uint64
	scale   float64
}

func newHistogram(buckets []float64, scale float64) *histogram {
	return &histogram{buckets: buckets, counts: make([]atomic.Uint64, len(buckets)), scale: scale}
}

func (h *histogram) observe(v float64) {
	for i, b := range h.buckets {
		if v <= b {
			h.counts[i].Add(1)
			break
		}
	}
	h.count.Add(1)
	h.sumNs.Add(uint64(v * h.scale))
}

func (h *histogram) render(sb *strings.Builder, name, labels string) {
	cumulative := uint64(0)
	sep := ""
	if labels != "" {
		sep = ","
	}
	for i, b := range h.buckets {
		cumulative += h.counts[i].Load()
		fmt.Fprintf(sb, "%s_bucket{%s%sle=\"%g\"} %d\n", name, labels, sep, b, cumulative)
	}
	total := h.count.Load()
	fmt.Fprintf(sb, "%s_bucket{%s%sle=\"+Inf\"} %d\n", name, labels, sep, total)
	fmt.Fprintf(sb, "%s_sum{%s} %g\n", name, labels, float64(h.sumNs.Load())/h.scale)
	fmt.Fprintf(sb, "%s_count{%s} %d\n", name, labels, total)
}

type edgeMetrics struct {
	mu         sync.Mutex
	requests   map[[2]string]*atomic.Uint64 // (method, code)
	latency    map[string]*histogram
	relays     map[[2]string]*atomic.Uint64 // (method, outcome)
	batches    *histogram
	overloaded atomic.Uint64
	inFlight   func() int
}

func newEdgeMetrics() *edgeMetrics {
	return &edgeMetrics{
		requests: map[[2]string]*atomic.Uint64{},
		latency:  map[string]*histogram{},
		relays:   map[[2]string]*atomic.Uint64{},
		batches:  newHistogram(batchBuckets, 1),
		inFlight: func() int { return 0 },
	}
}

func (m *edgeMetrics) counter(table map[[2]string]*atomic.Uint64, a, b string) *atomic.Uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := table[[2]string{a, b}]
	if c == nil {
		c = new(atomic.Uint64)
		table[[2]string{a, b}] = c
	}
	return c
}

func (m *edgeMetrics) observeRequest(method, code string, elapsed time.Duration) {
	m.counter(m.requests, method, code).Add(1)
	m.mu.Lock()
	h := m.latency[method]
	if h == nil {
		h = newHistogram(latencyBuckets, 1e9)
		m.latency[method] = h
	}
	m.mu.Unlock()
	h.observe(elapsed.Seconds())
}

func (m *edgeMetrics) relayed(method, outcome string) {
	m.counter(m.relays, method, outcome).Add(1)
}

func (m *edgeMetrics) observeBatch(n int) { m.batches.observe(float64(n)) }

func sortedKeys[V any](table map[[2]string]V) [][2]string {
	keys := make([][2]string, 0, len(table))
	for k := range table {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i][0] != keys[j][0] {
			return keys[i][0] < keys[j][0]
		}
		return keys[i][1] < keys[j][1]
	})
	return keys
}

// render gives the Prometheus text exposition of every edge metric.
func (m *edgeMetrics) render() string {
	var sb strings.Builder
	m.mu.Lock()
	defer m.mu.Unlock()
	sb.WriteString("# HELP zonestore_edge_requests_total Datastore API requests the edge answered, by method and gRPC status code.\n")
	sb.WriteString("# TYPE zonestore_edge_requests_total counter\n")
	for _, k := range sortedKeys(m.requests) {
		fmt.Fprintf(&sb, "zonestore_edge_requests_total{method=%q,code=%q} %d\n", k[0], k[1], m.requests[k].Load())
	}
	sb.WriteString("# HELP zonestore_edge_request_duration_seconds Datastore API request latency at the edge, by method.\n")
	sb.WriteString("# TYPE zonestore_edge_request_duration_seconds histogram\n")
	names := make([]string, 0, len(m.latency))
	for name := range m.latency {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		m.latency[name].render(&sb, "zonestore_edge_request_duration_seconds", fmt.Sprintf("method=%q", name))
	}
	sb.WriteString("# HELP zonestore_edge_batch_size Requests per write to the node's hand-off socket.\n")
	sb.WriteString("# TYPE zonestore_edge_batch_size histogram\n")
	m.batches.render(&sb, "zonestore_edge_batch_size", "")
	sb.WriteString("# HELP zonestore_edge_in_flight Requests handed to the node and not answered yet.\n")
	sb.WriteString("# TYPE zonestore_edge_in_flight gauge\n")
	fmt.Fprintf(&sb, "zonestore_edge_in_flight %d\n", m.inFlight())
	sb.WriteString("# HELP zonestore_edge_overloaded_total Requests refused with RESOURCE_EXHAUSTED because the node had too many in flight.\n")
	sb.WriteString("# TYPE zonestore_edge_overloaded_total counter\n")
	fmt.Fprintf(&sb, "zonestore_edge_overloaded_total %d\n", m.overloaded.Load())
	// The node's own series (api/metrics.py; the node leaves it to the edge when one
	// serves its client port): the dashboard's forwarding panel reads it.
	sb.WriteString("# HELP zonestore_forwarded_requests_total Requests this replica relayed to the leader.\n")
	sb.WriteString("# TYPE zonestore_forwarded_requests_total counter\n")
	forwarded := map[string]uint64{}
	for k, c := range m.relays {
		forwarded[k[0]] += c.Load()
	}
	names = names[:0]
	for name := range forwarded {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(&sb, "zonestore_forwarded_requests_total{method=%q} %d\n", name, forwarded[name])
	}
	sb.WriteString("# HELP zonestore_edge_relays_total Requests relayed to the leader's edge, by method and outcome.\n")
	sb.WriteString("# TYPE zonestore_edge_relays_total counter\n")
	for _, k := range sortedKeys(m.relays) {
		fmt.Fprintf(&sb, "zonestore_edge_relays_total{method=%q,outcome=%q} %d\n", k[0], k[1], m.relays[k].Load())
	}
	return sb.String()
}
