// The Go side of the hand-off socket (PROTOCOL.md): requests go to the Python node in
// batches over one Unix-socket connection, answers come back by request id. In-flight
// requests are bounded (back-pressure: RESOURCE_EXHAUSTED beyond the bound, never an
// unbounded queue), a caller that gives up (deadline, cancellation) sends CANCEL, and
// the node publishes the leader's client address on the same connection.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Frame types (PROTOCOL.md).
const (
	frameRequest  = 1
	frameCancel   = 2
	frameResponse = 3
	frameLeader   = 4
	frameReset    = 5
	frameHello    = 6
	frameMetrics  = 7

	protocolVersion = 1
	headerSize      = 9 // u32 length, u8 type, u32 id
	// codeNotLeader in a RESPONSE: this replica cannot serve the request; route it.
	codeNotLeader = 255
	maxBatchBytes = 1 << 20
)

// Methods in the order of their wire numbers: google.datastore.v1.Datastore's by their
// bare names, the Admin API's and google.longrunning's with their service's short name
// (services below).
var methods = []string{
	"Lookup", "RunQuery", "RunAggregationQuery", "BeginTransaction",
	"Commit", "Rollback", "AllocateIds", "ReserveIds",
	"DatastoreAdmin/ExportEntities", "DatastoreAdmin/ImportEntities",
	"DatastoreAdmin/CreateIndex", "DatastoreAdmin/DeleteIndex",
	"DatastoreAdmin/GetIndex", "DatastoreAdmin/ListIndexes",
	"Operations/GetOperation", "Operations/ListOperations",
	"Operations/CancelOperation", "Operations/DeleteOperation",
}

// The services served, by their full names: the prefix of their methods' names here.
var services = map[string]string{
	serviceName: "",
	"google.datastore.admin.v1.DatastoreAdmin": "DatastoreAdmin/",
	"google.longrunning.Operations":            "Operations/",
}

// methodOf names a gRPC path ("/pkg.Service/Method") as `methods` does, or false when
// the edge does not serve it.
func methodOf(path string) (string, bool) {
	service, name, ok := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if !ok {
		return "", false
	}
	prefix, ok := services[service]
	if !ok {
		return "", false
	}
	method := prefix + name
	_, known := methodIndex[method]
	return method, known
}

// pathOf is the gRPC path of one of `methods`.
func pathOf(method string) string {
	for service, prefix := range services {
		if prefix != "" {
			if name, ok := strings.CutPrefix(method, prefix); ok {
				return "/" + service + "/" + name
			}
		}
	}
	return "/" + serviceName + "/" + method
}

var methodIndex = func() map[string]byte {
	m := make(map[string]byte, len(methods))
	for i, name := range methods {
		m[name] = byte(i)
	}
	return m
}()

// The metadata handed to the node; everything else stays in the edge.
var passedMetadata = []string{"authorization", "x-goog-request-params"}

// answer is what the node said about one request.
type answer struct {
	code      codes.Code
	notLeader bool
	body      []byte // the response when code is OK
	message   string // the status message otherwise
	trailers  metadata.MD
}

// leaderState is the node's latest view of who leads.
type leaderState struct {
	servesHere bool   // this replica is the ready leader
	localReads bool   // strong reads go to this node even on a follower (--follower-reads; or TEST ONLY --unsafe-local-reads)
	addr       string // another replica's client address when it leads, else ""
}

type nodeConn struct {
	conn     net.Conn
	metrics  *edgeMetrics
	slots    chan struct{} // one per request in flight to the node
	queue    chan []byte   // encoded frames for the writer
	mu       sync.Mutex
	pending  map[uint32]chan answer
	nextID   uint32
	closed   chan struct{}
	closeErr atomic.Value

	leader        atomic.Pointer[leaderState]
	leaderMu      sync.Mutex
	leaderChanged chan struct{} // closed and replaced on every change
}

func dialNode(path string, timeout time.Duration, maxInFlight int, m *edgeMetrics) (*nodeConn, error) {
	deadline := time.Now().Add(timeout)
	var conn net.Conn
	var err error
	for {
		conn, err = net.Dial("unix", path)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("the node's hand-off socket %s: %w", path, err)
	}
	return newNodeConn(conn, maxInFlight, m), nil
}

func newNodeConn(conn net.Conn, maxInFlight int, m *edgeMetrics) *nodeConn {
	n := &nodeConn{
		conn:          conn,
		metrics:       m,
		slots:         make(chan struct{}, maxInFlight),
		queue:         make(chan []byte, 2*maxInFlight+16),
		pending:       make(map[uint32]chan answer),
		closed:        make(chan struct{}),
		leaderChanged: make(chan struct{}),
	}
	n.leader.Store(&leaderState{})
	go n.writeLoop()
	go n.readLoop()
	return n
}

// Done is closed when the connection to the node is gone.
func (n *nodeConn) Done() <-chan struct{} { return n.closed }

func (n *nodeConn) fail(err error) {
	n.mu.Lock()
	select {
	case <-n.closed:
		n.mu.Unlock()
		return
	default:
	}
	n.closeErr.Store(err)
	close(n.closed)
	pending := n.pending
	n.pending = map[uint32]chan answer{}
	n.mu.Unlock()
	n.conn.Close()
	for _, ch := range pending {
		ch <- answer{code: codes.Unavailable, message: "The node went away: " + err.Error()}
	}
}

// send queues a control frame (hello, metrics, cancel); dropped if the writer is full.
func (n *nodeConn) send(frame []byte) {
	select {
	case n.queue <- frame:
	default:
	}
}

func (n *nodeConn) writeLoop() {
	buf := make([]byte, 0, 64<<10)
	for {
		var frame []byte
		select {
		case frame = <-n.queue:
		case <-n.closed:
			return
		}
		buf = append(buf[:0], frame...)
		count := 1
	drain:
		for len(buf) < maxBatchBytes {
			select {
			case more := <-n.queue:
				buf = append(buf, more...)
				count++
			default:
				break drain
			}
		}
		n.metrics.observeBatch(count)
		if _, err := n.conn.Write(buf); err != nil {
			n.fail(err)
			return
		}
	}
}

func (n *nodeConn) readLoop() {
	r := bufio.NewReaderSize(n.conn, 256<<10)
	header := make([]byte, headerSize)
	for {
		if _, err := io.ReadFull(r, header); err != nil {
			n.fail(err)
			return
		}
		length := binary.LittleEndian.Uint32(header[0:4])
		kind := header[4]
		id := binary.LittleEndian.Uint32(header[5:9])
		if length < headerSize-4 {
			n.fail(fmt.Errorf("a frame of %d bytes is too short", length))
			return
		}
		payload := make([]byte, int(length)-(headerSize-4))
		if _, err := io.ReadFull(r, payload); err != nil {
			n.fail(err)
			return
		}
		switch kind {
		case frameResponse:
			a, err := decodeAnswer(payload)
			if err != nil {
				n.fail(err)
				return
			}
			n.mu.Lock()
			ch := n.pending[id]
			delete(n.pending, id)
			n.mu.Unlock()
			if ch != nil {
				ch <- a
			}
		case frameLeader:
			if len(payload) < 1 {
				n.fail(errors.New("a LEADER frame without flags"))
				return
			}
			n.setLeader(&leaderState{
				servesHere: payload[0]&1 != 0,
				localReads: payload[0]&2 != 0,
				addr:       string(payload[1:]),
			})
		default:
			n.fail(fmt.Errorf("unexpected frame type %d from the node", kind))
			return
		}
	}
}

func (n *nodeConn) setLeader(s *leaderState) {
	n.leaderMu.Lock()
	n.leader.Store(s)
	close(n.leaderChanged)
	n.leaderChanged = make(chan struct{})
	n.leaderMu.Unlock()
}

// leaderView returns the current state and a channel closed at the next change.
func (n *nodeConn) leaderView() (*leaderState, <-chan struct{}) {
	n.leaderMu.Lock()
	defer n.leaderMu.Unlock()
	return n.leader.Load(), n.leaderChanged
}

func decodeAnswer(p []byte) (answer, error) {
	bad := errors.New("a malformed RESPONSE frame")
	if len(p) < 2 {
		return answer{}, bad
	}
	a := answer{}
	code := p[0]
	count := int(p[1])
	p = p[2:]
	for i := 0; i < count; i++ {
		var k, v string
		var ok bool
		if k, p, ok = readString(p); !ok {
			return answer{}, bad
		}
		if v, p, ok = readString(p); !ok {
			return answer{}, bad
		}
		if a.trailers == nil {
			a.trailers = metadata.MD{}
		}
		a.trailers.Append(k, v)
	}
	switch {
	case code == codeNotLeader:
		a.notLeader = true
	case code == 0:
		a.body = p
	default:
		a.code = codes.Code(code)
		a.message = string(p)
	}
	return a, nil
}

func readString(p []byte) (string, []byte, bool) {
	if len(p) < 2 {
		return "", p, false
	}
	n := int(binary.LittleEndian.Uint16(p))
	if len(p) < 2+n {
		return "", p, false
	}
	return string(p[2 : 2+n]), p[2+n:], true
}

func appendString(b []byte, s string) []byte {
	if len(s) > 0xffff {
		s = s[:0xffff]
	}
	b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func frameHeader(b []byte, kind byte, id uint32, bodyLen int) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(headerSize-4+bodyLen))
	b = append(b, kind)
	return binary.LittleEndian.AppendUint32(b, id)
}

func controlFrame(kind byte, payload []byte) []byte {
	b := make([]byte, 0, headerSize+len(payload))
	b = frameHeader(b, kind, 0, len(payload))
	return append(b, payload...)
}

func encodeRequest(id uint32, method byte, timeout time.Duration, md metadata.MD, body []byte) []byte {
	var pairs [][2]string
	for _, key := range passedMetadata {
		for _, v := range md.Get(key) {
			pairs = append(pairs, [2]string{key, v})
		}
	}
	ms := uint32(0)
	if timeout > 0 {
		ms = uint32(min(timeout.Milliseconds(), 1<<31))
		if ms == 0 {
			ms = 1
		}
	}
	size := 6 + len(body)
	for _, p := range pairs {
		size += 4 + len(p[0]) + len(p[1])
	}
	b := make([]byte, 0, headerSize+size)
	b = frameHeader(b, frameRequest, id, size)
	b = append(b, method)
	b = binary.LittleEndian.AppendUint32(b, ms)
	b = append(b, byte(len(pairs)))
	for _, p := range pairs {
		b = appendString(b, p[0])
		b = appendString(b, p[1])
	}
	return append(b, body...)
}

var errOverloaded = status.Error(codes.ResourceExhausted,
	"The node has too many requests in flight; retry with backoff.")

// call hands one frame (built by encode with the id given) to the node and waits for its answer.
func (n *nodeConn) call(ctx context.Context, encode func(id uint32) []byte) (answer, error) {
	select {
	case <-n.closed:
		return answer{}, status.Error(codes.Unavailable, "The node is not connected to its edge.")
	default:
	}
	select {
	case n.slots <- struct{}{}:
	default:
		n.metrics.overloaded.Add(1)
		return answer{}, errOverloaded
	}
	defer func() { <-n.slots }()
	ch := make(chan answer, 1)
	n.mu.Lock()
	n.nextID++
	id := n.nextID
	n.pending[id] = ch
	n.mu.Unlock()
	frame := encode(id)
	select {
	case n.queue <- frame:
	default: // cannot happen while slots bound the queue; never block
		n.forget(id)
		return answer{}, errOverloaded
	}
	select {
	case a := <-ch:
		return a, nil
	case <-ctx.Done():
		if n.forget(id) {
			n.send(cancelFrame(id))
		}
		return answer{}, status.FromContextError(ctx.Err()).Err()
	}
}

func cancelFrame(id uint32) []byte {
	return frameHeader(make([]byte, 0, headerSize), frameCancel, id, 0)
}

// forget drops a pending request; false if its answer already came.
func (n *nodeConn) forget(id uint32) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.pending[id]
	delete(n.pending, id)
	return ok
}

// inFlight is the number of requests the node holds now.
func (n *nodeConn) inFlight() int { return len(n.slots) }

func (n *nodeConn) invoke(ctx context.Context, method string, md metadata.MD, body []byte) (answer, error) {
	index, ok := methodIndex[method]
	if !ok {
		return answer{}, status.Errorf(codes.Unimplemented, "unknown method %s", method)
	}
	var timeout time.Duration
	if deadline, ok := ctx.Deadline(); ok {
		timeout = time.Until(deadline)
		if timeout <= 0 {
			return answer{}, status.Error(codes.DeadlineExceeded, "context deadline exceeded")
		}
	}
	return n.call(ctx, func(id uint32) []byte { return encodeRequest(id, index, timeout, md, body) })
}

func (n *nodeConn) reset(ctx context.Context) (answer, error) {
	return n.call(ctx, func(id uint32) []byte {
		return frameHeader(make([]byte, 0, headerSize), frameReset, id, 0)
	})
}
