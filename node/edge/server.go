// The client port: gRPC (grpc-go, raw bytes in and out through a pass-through codec and
// an unknown-service handler, so no generated code) and REST on one listener. Each
// accepted connection is sniffed once: the HTTP/2 preface goes to the gRPC server,
// anything else (HTTP/1.1) to the REST handler. With client TLS the handshake happens
// first (ALPN offers h2 and http/1.1), then the same sniffing on the decrypted stream.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// rawCodec passes serialized messages through untouched.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }

func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

const maxRequestBytes = 10<<20 + 1<<20 // model/limits.MAX_REQUEST_BYTES + 1 MiB, as the node

// HTTP/2 flow-control windows of the client port (see newGRPCServer).
const (
	streamWindow = 1 << 20
	connWindow   = 4 << 20
)

func newGRPCServer(b *edgeBackend, m *edgeMetrics) *grpc.Server {
	return grpc.NewServer(
		grpc.ForceServerCodec(rawCodec{}),
		grpc.MaxRecvMsgSize(maxRequestBytes),
		grpc.MaxSendMsgSize(64<<20),
		// Fixed flow-control windows (grpc-java's server default is 1 MiB too) turn off
		// grpc-go's BDP estimation, which sends a PING after the first DATA of every
		// round trip: with an official client's calls one at a time on a connection,
		// that is a PING and its ACK per call, written, read and woken for on both
		// sides. Measured (one client, bench-shaped puts, three alternating pairs):
		// client CPU per call 553-641 -> 440-486 µs, the edge's 371-424 -> 303-330.
		// The windows still bound what a client can have in flight: 1 MiB per stream,
		// 4 MiB per connection (BDP let them grow to 16 MiB).
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
		grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
			started := time.Now()
			full, _ := grpc.MethodFromServerStream(stream)
			method, ok := methodOf(full)
			if !ok {
				m.observeRequest("unknown", codes.Unimplemented.String(), time.Since(started))
				return status.Errorf(codes.Unimplemented, "unknown method %s", full)
			}
			var body []byte
			if err := stream.RecvMsg(&body); err != nil {
				return err
			}
			md, _ := metadata.FromIncomingContext(stream.Context())
			response, trailers, err := b.serve(stream.Context(), Call{Method: method, Body: body, MD: md})
			if trailers != nil {
				stream.SetTrailer(trailers)
			}
			code := codes.OK
			if err == nil {
				err = stream.SendMsg(&response)
			}
			if err != nil {
				code = status.Code(err)
			}
			m.observeRequest(method, code.String(), time.Since(started))
			return err
		}),
	)
}

// chanListener is a net.Listener fed by the sniffer.
type chanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

func (l *chanListener) offer(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.closed:
		c.Close()
	}
}

// peekedConn replays the sniffed bytes before the rest of the stream.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

var http2Preface = []byte("PRI * HTTP/2.0")

// mux accepts on one listener and hands each connection to gRPC or HTTP.
type mux struct {
	inner   net.Listener
	tls     func() *tls.Config // nil: cleartext
	grpcL   *chanListener
	httpL   *chanListener
	timeout time.Duration
}

func newMux(inner net.Listener, tlsConfig func() *tls.Config) *mux {
	return &mux{
		inner:   inner,
		tls:     tlsConfig,
		grpcL:   newChanListener(inner.Addr()),
		httpL:   newChanListener(inner.Addr()),
		timeout: 10 * time.Second,
	}
}

func (m *mux) serve() error {
	for {
		c, err := m.inner.Accept()
		if err != nil {
			m.grpcL.Close()
			m.httpL.Close()
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go m.sniff(c)
	}
}

func (m *mux) sniff(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(m.timeout))
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	if m.tls != nil {
		t := tls.Server(c, m.tls())
		ctx, cancel := context.WithTimeout(context.Background(), m.timeout)
		err := t.HandshakeContext(ctx)
		cancel()
		if err != nil {
			c.Close()
			return
		}
		c = t
	}
	r := bufio.NewReaderSize(c, 4096)
	head, err := r.Peek(len(http2Preface))
	if err != nil && len(head) == 0 {
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	wrapped := &peekedConn{Conn: c, r: r}
	if bytes.HasPrefix(head, http2Preface) {
		m.grpcL.offer(wrapped)
		return
	}
	m.httpL.offer(wrapped)
}
