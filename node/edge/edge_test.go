package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// fakeNode is the other end of the hand-off socket, driven by the test.
type fakeNode struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	mu   sync.Mutex
}

type frame struct {
	kind    byte
	id      uint32
	payload []byte
}

func (f *fakeNode) read() frame {
	f.t.Helper()
	fr, err := f.next()
	if err != nil {
		f.t.Fatalf("read: %v", err)
	}
	return fr
}

// next reads one frame; an error once the connection is gone (for goroutines, which
// must not call Fatal).
func (f *fakeNode) next() (frame, error) {
	header := make([]byte, headerSize)
	if _, err := io.ReadFull(f.r, header); err != nil {
		return frame{}, err
	}
	payload := make([]byte, int(binary.LittleEndian.Uint32(header))-5)
	if _, err := io.ReadFull(f.r, payload); err != nil {
		return frame{}, err
	}
	return frame{header[4], binary.LittleEndian.Uint32(header[5:]), payload}, nil
}

func (f *fakeNode) respond(id uint32, code byte, trailers [][2]string, payload []byte) {
	body := []byte{code, byte(len(trailers))}
	for _, t := range trailers {
		body = appendString(body, t[0])
		body = appendString(body, t[1])
	}
	body = append(body, payload...)
	f.mu.Lock()
	defer f.mu.Unlock()
	out := frameHeader(nil, frameResponse, id, len(body))
	if _, err := f.conn.Write(append(out, body...)); err != nil {
		f.t.Errorf("write: %v", err)
	}
}

func (f *fakeNode) leader(servesHere bool, addr string) {
	flags := byte(0)
	if servesHere {
		flags = 1
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.conn.Write(controlFrame(frameLeader, append([]byte{flags}, addr...))); err != nil {
		f.t.Errorf("write: %v", err)
	}
}

// connected gives an edge-side nodeConn over a real Unix socket and the fake node behind it.
func connected(t *testing.T, maxInFlight int) (*nodeConn, *fakeNode) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "n.sock")
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := lis.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	n, err := dialNode(path, 5*time.Second, maxInFlight, newEdgeMetrics())
	if err != nil {
		t.Fatal(err)
	}
	c := <-accepted
	t.Cleanup(func() { c.Close(); n.fail(io.EOF) })
	return n, &fakeNode{t: t, conn: c, r: bufio.NewReader(c)}
}

func TestRequestFrameCarriesMethodDeadlineMetadataAndBody(t *testing.T) {
	n, node := connected(t, 8)
	md := metadata.Pairs("authorization", "Bearer x", "x-goog-request-params", "project_id=p", "other", "dropped")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	done := make(chan answer, 1)
	go func() {
		a, err := n.invoke(ctx, "Commit", md, []byte("body"))
		if err != nil {
			t.Error(err)
		}
		done <- a
	}()
	f := node.read()
	if f.kind != frameRequest {
		t.Fatalf("kind %d", f.kind)
	}
	p := f.payload
	if p[0] != 4 {
		t.Fatalf("method %d, want Commit (4)", p[0])
	}
	ms := binary.LittleEndian.Uint32(p[1:5])
	if ms == 0 || ms > 3000 {
		t.Fatalf("timeout %d ms", ms)
	}
	if p[5] != 2 {
		t.Fatalf("%d metadata pairs, want authorization and x-goog-request-params only", p[5])
	}
	rest := p[6:]
	var k, v string
	k, rest, _ = readString(rest)
	v, rest, _ = readString(rest)
	if k != "authorization" || v != "Bearer x" {
		t.Fatalf("%q=%q", k, v)
	}
	_, rest, _ = readString(rest)
	_, rest, _ = readString(rest)
	if string(rest) != "body" {
		t.Fatalf("body %q", rest)
	}
	node.respond(f.id, 0, [][2]string{{answeredKey, "1"}}, []byte("resp"))
	a := <-done
	if string(a.body) != "resp" || a.trailers.Get(answeredKey)[0] != "1" {
		t.Fatalf("answer %+v", a)
	}
}

func TestCallsWaitingMeanwhileGoOutInOneBatch(t *testing.T) {
	// A pipe: a write blocks until the node reads, like a node busy with its last batch.
	edgeSide, nodeSide := net.Pipe()
	n := newNodeConn(edgeSide, 64, newEdgeMetrics())
	defer n.fail(io.EOF)
	node := &fakeNode{t: t, conn: nodeSide, r: bufio.NewReader(nodeSide)}
	n.send(cancelFrame(1))
	waitFor(t, func() bool { return n.metrics.batches.count.Load() == 1 }) // the writer is blocked
	for i := 2; i <= 10; i++ {
		n.send(cancelFrame(uint32(i)))
	}
	for i := 1; i <= 10; i++ {
		if f := node.read(); f.id != uint32(i) {
			t.Fatalf("frame %d arrived as %d", i, f.id)
		}
	}
	if got := n.metrics.batches.count.Load(); got != 2 {
		t.Fatalf("%d writes, want 2 (one frame, then the nine that queued meanwhile)", got)
	}
	if got := n.metrics.batches.sumNs.Load(); got != 10 {
		t.Fatalf("%d frames counted", got)
	}
}

func TestBeyondTheInFlightBoundCallsAreRefusedNotQueued(t *testing.T) {
	n, node := connected(t, 2)
	ctx := context.Background()
	results := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() {
			_, err := n.invoke(ctx, "Lookup", nil, nil)
			results <- err
		}()
	}
	first, second := node.read(), node.read()
	_, err := n.invoke(ctx, "Lookup", nil, nil)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("third call: %v, want RESOURCE_EXHAUSTED", err)
	}
	node.respond(first.id, 0, nil, nil)
	node.respond(second.id, 0, nil, nil)
	for i := 0; i < 2; i++ {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	if n.inFlight() != 0 {
		t.Fatalf("%d still in flight", n.inFlight())
	}
}

func TestACallerThatGivesUpSendsCancel(t *testing.T) {
	n, node := connected(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	errs := make(chan error, 1)
	go func() {
		_, err := n.invoke(ctx, "RunQuery", nil, nil)
		errs <- err
	}()
	req := node.read()
	if got := status.Code(<-errs); got != codes.DeadlineExceeded {
		t.Fatalf("got %v, want DEADLINE_EXCEEDED", got)
	}
	cancelled := node.read()
	if cancelled.kind != frameCancel || cancelled.id != req.id {
		t.Fatalf("got %+v, want CANCEL of %d", cancelled, req.id)
	}
}

func TestTheNodeGoingAwayFailsCallsWithUnavailable(t *testing.T) {
	n, node := connected(t, 4)
	errs := make(chan answer, 1)
	go func() {
		a, _ := n.invoke(context.Background(), "Lookup", nil, nil)
		errs <- a
	}()
	node.read()
	node.conn.Close()
	if a := <-errs; a.code != codes.Unavailable {
		t.Fatalf("got %+v", a)
	}
	if _, err := n.invoke(context.Background(), "Lookup", nil, nil); status.Code(err) != codes.Unavailable {
		t.Fatalf("after close: %v", err)
	}
}

func readOptions(fields ...[]byte) []byte {
	var opts []byte
	for _, f := range fields {
		opts = append(opts, f...)
	}
	var b []byte
	b = protowire.AppendTag(b, 8, protowire.BytesType) // project_id
	b = protowire.AppendString(b, "p")
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	return protowire.AppendBytes(b, opts)
}

func consistency(v uint64) []byte {
	b := protowire.AppendTag(nil, 1, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func TestRelayDecision(t *testing.T) {
	readTime := protowire.AppendBytes(protowire.AppendTag(nil, 4, protowire.BytesType), []byte{8, 1})
	txn := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), []byte("t"))
	cases := []struct {
		method string
		body   []byte
		leader bool
	}{
		{"Commit", nil, true},
		{"BeginTransaction", nil, true},
		{"Rollback", nil, true},
		{"AllocateIds", nil, true},
		{"ReserveIds", nil, true},
		{"Lookup", nil, true},                                 // strong by default
		{"Lookup", readOptions(), true},                       // empty read_options: strong
		{"Lookup", readOptions(consistency(1)), true},         // STRONG
		{"Lookup", readOptions(consistency(2)), false},        // EVENTUAL
		{"RunQuery", readOptions(consistency(2)), false},      // EVENTUAL
		{"RunAggregationQuery", readOptions(readTime), false}, // read_time
		{"RunQuery", readOptions(txn), true},                  // in a transaction
		{"Lookup", []byte{0xff, 0xff, 0xff}, true},            // unparsable: the node decides
	}
	for _, c := range cases {
		if got := needsLeader(c.method, c.body); got != c.leader {
			t.Errorf("needsLeader(%s, %x) = %v, want %v", c.method, c.body, got, c.leader)
		}
	}
}

func TestABrokenRelayOfACommitIsAmbiguousButAFailedDialIsNot(t *testing.T) {
	broken := status.New(codes.Unavailable, "error reading from server: EOF")
	dial := status.New(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`)
	if code, _ := relayedStatus("Commit", broken); code != codes.DeadlineExceeded {
		t.Errorf("broken Commit: %v", code)
	}
	if code, _ := relayedStatus("AllocateIds", broken); code != codes.DeadlineExceeded {
		t.Errorf("broken AllocateIds: %v", code)
	}
	if code, _ := relayedStatus("Lookup", broken); code != codes.Unavailable {
		t.Errorf("broken Lookup: %v", code)
	}
	if code, _ := relayedStatus("Commit", dial); code != codes.Unavailable {
		t.Errorf("Commit that never left: %v", code)
	}
}

// A follower's edge: a write is relayed without touching its node; NOT_LEADER from the
// node sends the call on; too many hops end it.
func TestRoutingFollowsTheLeaderTheNodePublishes(t *testing.T) {
	n, node := connected(t, 8)
	m := newEdgeMetrics()
	b := &edgeBackend{node: n, metrics: m, relay: newRelayer(nil, m)}
	defer b.relay.close()

	// Nobody leads and the wait runs out: UNAVAILABLE, the node never asked.
	saved := leaderWait
	leaderWait = 100 * time.Millisecond
	defer func() { leaderWait = saved }()
	_, _, err := b.serve(context.Background(), Call{Method: "Commit", MD: metadata.MD{}})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("no leader: %v", err)
	}

	// This replica leads: the node serves the call.
	node.leader(true, "")
	waitFor(t, func() bool { s, _ := n.leaderView(); return s.servesHere })
	done := make(chan error, 1)
	go func() {
		_, _, err := b.serve(context.Background(), Call{Method: "Commit", MD: metadata.MD{}})
		done <- err
	}()
	f := node.read()
	node.respond(f.id, byte(codes.Aborted), [][2]string{{answeredKey, "1"}}, []byte("conflict"))
	if err := <-done; status.Code(err) != codes.Aborted || status.Convert(err).Message() != "conflict" {
		t.Fatalf("the node's status: %v", err)
	}

	// Another replica leads: relayed with hops + 1, refused past the limit.
	node.leader(false, "127.0.0.1:1")
	waitFor(t, func() bool { s, _ := n.leaderView(); return s.addr != "" })
	_, _, err = b.serve(context.Background(), Call{Method: "Commit", MD: metadata.Pairs(forwardedKey, "3")})
	if status.Code(err) != codes.Unavailable || status.Convert(err).Message() != "The leader changed while the request was relayed; retry it." {
		t.Fatalf("hop limit: %v", err)
	}
	_, _, err = b.serve(context.Background(), Call{Method: "Commit", MD: metadata.MD{}})
	if status.Code(err) != codes.Unavailable { // nothing listens on :1: never sent
		t.Fatalf("relay to a dead leader: %v", err)
	}

	// An eventual read is still the node's.
	go func() {
		_, _, err := b.serve(context.Background(), Call{Method: "Lookup", Body: readOptions(consistency(2)), MD: metadata.MD{}})
		done <- err
	}()
	f = node.read()
	if f.kind != frameRequest {
		t.Fatalf("eventual read not handed to the node: %+v", f)
	}
	node.respond(f.id, 0, nil, []byte("found"))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// fakeEdge stands for another replica's edge: it answers every call with its name and
// hands the call's metadata to the test.
type fakeEdge struct {
	addr  string
	calls chan metadata.MD
}

func startFakeEdge(t *testing.T, name string) *fakeEdge {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &fakeEdge{addr: lis.Addr().String(), calls: make(chan metadata.MD, 8)}
	server := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}),
		grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
			var body []byte
			if err := stream.RecvMsg(&body); err != nil {
				return err
			}
			md, _ := metadata.FromIncomingContext(stream.Context())
			e.calls <- md
			response := []byte(name)
			return stream.SendMsg(&response)
		}))
	go server.Serve(lis)
	t.Cleanup(server.Stop)
	return e
}

// No bounce: a call relayed here from edges that could not serve it is not sent back to
// one of them while this replica's view is the one it had when the call came: it waits
// for the view to move (a transfer finishing: this replica leads, or another one
// does), for at most bounceWait; the hop limit still fails at once.
func TestARelayedCallIsNotSentBackToAnEdgeItCameThroughUntilTheViewMoves(t *testing.T) {
	n, node := connected(t, 8)
	m := newEdgeMetrics()
	b := &edgeBackend{node: n, metrics: m, relay: newRelayer(nil, m)}
	defer b.relay.close()
	old, other := startFakeEdge(t, "old"), startFakeEdge(t, "other")
	savedWait, savedBounce := leaderWait, bounceWait
	leaderWait, bounceWait = 10*time.Second, 10*time.Second
	defer func() { leaderWait, bounceWait = savedWait, savedBounce }()
	const self = "127.0.0.1:2" // how `old` named this edge
	came := func() metadata.MD {
		return metadata.Pairs(forwardedKey, "2", relayedToKey, old.addr+","+self)
	}
	type result struct {
		body []byte
		err  error
	}
	serve := func(md metadata.MD) chan result {
		done := make(chan result, 1)
		go func() {
			body, _, err := b.serve(context.Background(), Call{Method: "Commit", MD: md})
			done <- result{body, err}
		}()
		return done
	}
	held := func(done chan result, what string) {
		t.Helper()
		select {
		case r := <-done:
			t.Fatalf("%s: answered at once (%q, %v) instead of waiting for the view to move", what, r.body, r.err)
		case md := <-old.calls:
			t.Fatalf("%s: bounced back to the edge it came through: %v", what, md)
		case <-time.After(150 * time.Millisecond):
		}
	}

	// The view still names the edge the call came through: held; then this replica
	// leads, and its node serves the call.
	node.leader(false, old.addr)
	waitFor(t, func() bool { s, _ := n.leaderView(); return s.addr == old.addr })
	done := serve(came())
	held(done, "view naming the old leader")
	node.leader(true, "")
	f := node.read()
	if f.kind != frameRequest {
		t.Fatalf("not handed to the node once this replica leads: %+v", f)
	}
	node.respond(f.id, 0, nil, []byte("here"))
	if r := <-done; r.err != nil || string(r.body) != "here" {
		t.Fatalf("after the view moved: %q %v", r.body, r.err)
	}

	// Held again; the view moves to a third replica: relayed there, one hop more, the
	// list of edges grown by it.
	node.leader(false, old.addr)
	waitFor(t, func() bool { s, _ := n.leaderView(); return s.addr == old.addr })
	done = serve(came())
	held(done, "view naming the old leader, again")
	node.leader(false, other.addr)
	if r := <-done; r.err != nil || string(r.body) != "other" {
		t.Fatalf("relay to the new leader: %q %v", r.body, r.err)
	}
	md := <-other.calls
	if got := md.Get(forwardedKey); len(got) != 1 || got[0] != "3" {
		t.Errorf("hops: %v", got)
	}
	if got, want := md.Get(relayedToKey), old.addr+","+self+","+other.addr; len(got) != 1 || got[0] != want {
		t.Errorf("relayed-to: %v, want %s", got, want)
	}

	// A view naming an edge the call has not been through: relayed at once, the list
	// started.
	if r := <-serve(metadata.MD{}); r.err != nil || string(r.body) != "other" {
		t.Fatalf("plain relay: %q %v", r.body, r.err)
	}
	if got := (<-other.calls).Get(relayedToKey); len(got) != 1 || got[0] != other.addr {
		t.Errorf("relayed-to of a first relay: %v", got)
	}

	// At the hop limit it fails at once, whatever the view.
	node.leader(false, old.addr)
	waitFor(t, func() bool { s, _ := n.leaderView(); return s.addr == old.addr })
	started := time.Now()
	_, _, err := b.serve(context.Background(), Call{Method: "Commit",
		MD: metadata.Pairs(forwardedKey, "3", relayedToKey, old.addr)})
	if status.Code(err) != codes.Unavailable || time.Since(started) > time.Second {
		t.Fatalf("hop limit: %v after %v", err, time.Since(started))
	}

	// The view never moves (the edge the call came from was the origin and its view is
	// right): after bounceWait the call goes back all the same.
	bounceWait = 100 * time.Millisecond
	started = time.Now()
	if r := <-serve(came()); r.err != nil || string(r.body) != "old" {
		t.Fatalf("after bounceWait: %q %v", r.body, r.err)
	}
	<-old.calls
	if waited := time.Since(started); waited < bounceWait {
		t.Errorf("relayed back after %v, before bounceWait", waited)
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMetricsRenderAsPrometheusText(t *testing.T) {
	m := newEdgeMetrics()
	m.observeRequest("Commit", "OK", 3*time.Millisecond)
	m.relayed("Commit", "ok")
	m.observeBatch(5)
	text := m.render()
	for _, want := range []string{
		`zonestore_edge_requests_total{method="Commit",code="OK"} 1`,
		`zonestore_edge_request_duration_seconds_bucket{method="Commit",le="0.005"} 1`,
		`zonestore_edge_batch_size_bucket{le="8"} 1`,
		`zonestore_forwarded_requests_total{method="Commit"} 1`,
		`zonestore_edge_relays_total{method="Commit",outcome="ok"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("missing %s in\n%s", want, text)
		}
	}
}
