// The edge's Backend: where a call goes. A replica that leads (or a read it can serve
// itself: eventual, read_time) hands the call to its Python node; anything else goes
// straight to the leader's edge, so a follower's Python never sees it. When the node
// answers NOT_LEADER (it lost leadership meanwhile) or no leader is known, the call
// waits up to leaderWait for one, then is relayed (at most maxHops times) or served
// here once this replica leads: the semantics of api/forward.py.
//
// No bounce: a relayed call carries the addresses it was relayed to
// (x-zonestore-relayed-to). Those edges had it and could not serve it, so while this
// replica's view of the leader is still the one it held when the call arrived, a view
// naming one of them is stale (during a transfer A -> B, A names B before B knows it
// leads, and B still names A): the call waits for the view to change instead of
// going back, for at most bounceWait (an origin edge is not in the list, and its view
// can be the right one), then is relayed anyway. The hop limit stays the backstop and
// still fails at once.
package main

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

const (
	serviceName  = "google.datastore.v1.Datastore"
	forwardedKey = "x-zonestore-forwarded"
	relayedToKey = "x-zonestore-relayed-to"
	answeredKey  = "x-zonestore-answered"
	maxHops      = 3
)

var (
	leaderWait = 5 * time.Second
	// bounceWait: how long a call may be held back from an edge it was already relayed
	// to while this replica's view does not move (far above a view's lag behind a
	// transfer: the node publishes every 10 ms).
	bounceWait = 250 * time.Millisecond
)

// answered marks a status as a deliberate answer (not a broken connection), so a
// relaying replica passes it on unchanged.
var answered = metadata.Pairs(answeredKey, "1")

type edgeBackend struct {
	node    *nodeConn
	metrics *edgeMetrics
	relay   *relayer
}

func (b *edgeBackend) Invoke(ctx context.Context, call Call) ([]byte, error) {
	body, _, err := b.serve(ctx, call)
	return body, err
}

func (b *edgeBackend) Reset(ctx context.Context) error {
	a, err := b.node.reset(ctx)
	if err != nil {
		return err
	}
	if a.notLeader {
		return b.relay.reset(ctx, b.node)
	}
	if a.code != codes.OK {
		return status.Error(a.code, a.message)
	}
	return nil
}

// serve answers one call: the response, the trailers to send, or a status error.
func (b *edgeBackend) serve(ctx context.Context, call Call) ([]byte, metadata.MD, error) {
	hops := hopsOf(call.MD)
	state, _ := b.node.leaderView()
	if !state.servesHere && needsLeader(call.Method, call.Body) && !(state.localReads && isRead(call.Method)) {
		return b.route(ctx, call, hops, state)
	}
	a, err := b.node.invoke(ctx, call.Method, call.MD, call.Body)
	if err != nil {
		return nil, answered, err
	}
	if a.notLeader {
		return b.route(ctx, call, hops, state)
	}
	return finish(a)
}

func finish(a answer) ([]byte, metadata.MD, error) {
	if a.code != codes.OK {
		return nil, a.trailers, status.Error(a.code, a.message)
	}
	return a.body, a.trailers, nil
}

// route waits for somewhere to serve the call: here once this replica leads, or the
// leader's edge, unless that edge already had the call and this replica's view is
// still `arrival`, the one it held when the call came in (the no-bounce rule, above).
func (b *edgeBackend) route(ctx context.Context, call Call, hops int, arrival *leaderState) ([]byte, metadata.MD, error) {
	relayedTo := relayedToOf(call.MD)
	deadline := time.NewTimer(leaderWait)
	defer deadline.Stop()
	var bounce *time.Timer // runs while a relay back is held
	bounced := false       // bounceWait ran out: relay back all the same
	defer func() {
		if bounce != nil {
			bounce.Stop()
		}
	}()
	for {
		state, changed := b.node.leaderView()
		var retry, held <-chan time.Time
		if state.servesHere {
			a, err := b.node.invoke(ctx, call.Method, call.MD, call.Body)
			if err != nil {
				return nil, answered, err
			}
			if !a.notLeader {
				return finish(a)
			}
			retry = time.After(20 * time.Millisecond) // lost it again at once: route anew
		} else if state.addr != "" {
			if hops >= maxHops {
				return nil, answered, status.Error(codes.Unavailable,
					"The leader changed while the request was relayed; retry it.")
			}
			if bounced || state != arrival || !slices.Contains(relayedTo, state.addr) {
				return b.relay.forward(ctx, state.addr, call, hops, relayedTo)
			}
			if bounce == nil {
				bounce = time.NewTimer(bounceWait)
			}
			held = bounce.C
		}
		select {
		case <-changed:
		case <-retry:
		case <-held:
			bounced = true
		case <-b.node.Done():
			return nil, answered, status.Error(codes.Unavailable, "The node is not connected to its edge.")
		case <-deadline.C:
			return nil, answered, status.Error(codes.Unavailable,
				"no leader is known; the replica group may have lost quorum")
		case <-ctx.Done():
			return nil, nil, status.FromContextError(ctx.Err()).Err()
		}
	}
}

func hopsOf(md metadata.MD) int {
	values := md.Get(forwardedKey)
	if len(values) == 0 {
		return 0
	}
	n, err := strconv.Atoi(values[0])
	if err != nil {
		return maxHops
	}
	return n
}

// relayedToOf: the client addresses a call was relayed to, in order (comma-separated,
// in one value or several).
func relayedToOf(md metadata.MD) []string {
	var addrs []string
	for _, v := range md.Get(relayedToKey) {
		for _, addr := range strings.Split(v, ",") {
			if addr = strings.TrimSpace(addr); addr != "" {
				addrs = append(addrs, addr)
			}
		}
	}
	return addrs
}

func isRead(method string) bool {
	return method == "Lookup" || method == "RunQuery" || method == "RunAggregationQuery"
}

// needsLeader: writes, transactions and strong reads need the leader; eventual and
// read_time reads are served by any replica (the node itself decides the rest). The
// Admin API and its operations are served by the replica that receives them (an
// operation lives on the node that started it, so GetOperation must reach that node),
// except index changes, which go through the leader's log.
func needsLeader(method string, body []byte) bool {
	switch method {
	case "Lookup", "RunQuery", "RunAggregationQuery":
	case "DatastoreAdmin/CreateIndex", "DatastoreAdmin/DeleteIndex":
		return true
	default:
		return !strings.Contains(method, "/")
	}
	// read_options is field 1 of all three requests.
	options, ok := field(body, 1)
	if !ok {
		return true // strong by default
	}
	if _, ok := field(options, 4); ok { // read_time
		return false
	}
	if v, ok := varintField(options, 1); ok { // read_consistency
		return v != 2 // EVENTUAL
	}
	return true
}

// field returns the last occurrence of a length-delimited field (as protobuf merges).
func field(b []byte, number protowire.Number) ([]byte, bool) {
	var found []byte
	ok := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
		if num == number && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil, false
			}
			found, ok = v, true
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return nil, false
		}
		b = b[m:]
	}
	return found, ok
}

func varintField(b []byte, number protowire.Number) (uint64, bool) {
	var found uint64
	ok := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, false
		}
		b = b[n:]
		if num == number && typ == protowire.VarintType {
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return 0, false
			}
			found, ok = v, true
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return 0, false
		}
		b = b[m:]
	}
	return found, ok
}

// relayer keeps one gRPC connection per leader address.
type relayer struct {
	mu      sync.Mutex
	conns   map[string]*grpc.ClientConn
	tls     *tls.Config // nil: cleartext, like the client port
	metrics *edgeMetrics
}

func newRelayer(tlsConfig *tls.Config, m *edgeMetrics) *relayer {
	return &relayer{conns: map[string]*grpc.ClientConn{}, tls: tlsConfig, metrics: m}
}

func (r *relayer) conn(addr string) (*grpc.ClientConn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.conns[addr]; c != nil {
		return c, nil
	}
	creds := insecure.NewCredentials()
	if r.tls != nil {
		creds = credentials.NewTLS(r.tls)
	}
	c, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(creds),
		// The client port's fixed windows (server.go), for the same reason: with
		// grpc-go's BDP estimation on, the relayer sent a PING after the first DATA of
		// every relayed answer, and the leader's edge woke to acknowledge it.
		grpc.WithInitialWindowSize(streamWindow),
		grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithDefaultCallOptions(
			grpc.ForceCodec(rawCodec{}),
			grpc.MaxCallRecvMsgSize(64<<20),
			grpc.MaxCallSendMsgSize(64<<20),
		),
	)
	if err != nil {
		return nil, err
	}
	r.conns[addr] = c
	return c, nil
}

// Relayed calls whose effect a lost connection leaves in doubt.
func notIdempotent(method string) bool { return method == "Commit" || method == "AllocateIds" }

func (r *relayer) forward(ctx context.Context, addr string, call Call, hops int, relayedTo []string) ([]byte, metadata.MD, error) {
	c, err := r.conn(addr)
	if err != nil {
		r.metrics.relayed(call.Method, "error")
		return nil, answered, status.Errorf(codes.Unavailable, "The leader could not be reached: %v", err)
	}
	out := metadata.MD{}
	for _, key := range passedMetadata {
		if v := call.MD.Get(key); len(v) > 0 {
			out[key] = v
		}
	}
	out.Set(forwardedKey, strconv.Itoa(hops+1))
	out.Set(relayedToKey, strings.Join(append(slices.Clip(relayedTo), addr), ","))
	ctx = metadata.NewOutgoingContext(ctx, out)
	request := call.Body
	var response []byte
	var trailers metadata.MD
	err = c.Invoke(ctx, pathOf(call.Method), &request, &response, grpc.Trailer(&trailers))
	if err == nil {
		r.metrics.relayed(call.Method, "ok")
		return response, trailers, nil
	}
	st := status.Convert(err)
	if len(trailers.Get(answeredKey)) > 0 {
		r.metrics.relayed(call.Method, "answered")
		return nil, trailers, err
	}
	r.metrics.relayed(call.Method, "broken")
	code, message := relayedStatus(call.Method, st)
	return nil, answered, status.Error(code, message)
}

// relayedStatus: a failure that is not the leader's own answer is the connection
// failing. Before the request left ("while dialing": nothing happened) it is
// UNAVAILABLE; after it left, a Commit or AllocateIds may have taken effect, and
// UNAVAILABLE would invite a blind retry.
func relayedStatus(method string, st *status.Status) (codes.Code, string) {
	details := st.Message()
	lower := strings.ToLower(details)
	beforeSend := st.Code() == codes.Unavailable && (strings.Contains(lower, "while dialing") ||
		strings.Contains(lower, "failed to connect") || strings.Contains(lower, "connection refused") ||
		strings.Contains(lower, "produced zero addresses"))
	if notIdempotent(method) && !beforeSend {
		return codes.DeadlineExceeded, "The connection to the leader broke while relaying (" +
			details + "); the request may or may not have been applied."
	}
	return codes.Unavailable, "The leader could not be reached: " + details
}

func (r *relayer) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.Close()
	}
	r.conns = map[string]*grpc.ClientConn{}
}

// reset asks the leader's edge (POST /reset, the REST surface) to reset, when the node
// here is a follower: the data is deleted through the leader's log.
func (r *relayer) reset(ctx context.Context, node *nodeConn) error {
	state, _ := node.leaderView()
	if state.addr == "" {
		return status.Error(codes.Unavailable, "no leader is known; retry the reset")
	}
	scheme := "http"
	transport := &http.Transport{}
	if r.tls != nil {
		scheme = "https"
		transport.TLSClientConfig = r.tls.Clone()
	}
	client := &http.Client{Transport: transport, Timeout: 60 * time.Second}
	defer transport.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, scheme+"://"+state.addr+"/reset", nil)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	resp, err := client.Do(req)
	if err != nil {
		return status.Errorf(codes.Unavailable, "The leader could not be reached: %v", err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusForbidden:
		return status.Error(codes.PermissionDenied, strings.TrimSpace(string(text)))
	default:
		return status.Errorf(codes.Unavailable, "the leader answered the reset with %s: %s",
			resp.Status, strings.TrimSpace(string(text)))
	}
}
