package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/metadata"
)

// An HTTP/2 client speaking frames, to see what the client port sends besides answers.
type rawH2 struct {
	t      *testing.T
	conn   net.Conn
	framer *http2.Framer
}

func dialRawH2(t *testing.T, addr string) *rawH2 {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	c := &rawH2{t: t, conn: conn, framer: http2.NewFramer(conn, conn)}
	if err := c.framer.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return c
}

// control answers the connection-level frames either side of a raw HTTP/2 connection
// must: it acknowledges a PING (ping: it was one, not an acknowledgement) and SETTINGS
// (settings: what they announced; nil for any other frame).
func control(fr *http2.Framer, f http2.Frame) (ping bool, settings []http2.Setting, err error) {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if f.IsAck() {
			return false, nil, nil
		}
		settings = []http2.Setting{}
		if err := f.ForeachSetting(func(s http2.Setting) error {
			settings = append(settings, s)
			return nil
		}); err != nil {
			return false, nil, err
		}
		return false, settings, fr.WriteSettingsAck()
	case *http2.PingFrame:
		if f.IsAck() {
			return false, nil, nil
		}
		return true, nil, fr.WritePing(true, f.Data)
	}
	return false, nil, nil
}

// initialWindow is the SETTINGS_INITIAL_WINDOW_SIZE among settings (0 when absent).
func initialWindow(settings []http2.Setting) uint32 {
	window := uint32(0)
	for _, s := range settings {
		if s.ID == http2.SettingInitialWindowSize {
			window = s.Val
		}
	}
	return window
}

// unary sends one gRPC call on stream id and reads frames until its trailers; it returns
// how many PING frames (not acknowledgements) the server sent meanwhile, and the
// settings it announced.
func (c *rawH2) unary(id uint32, path string, message []byte) (pings int, settings []http2.Setting) {
	c.t.Helper()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":path", path}, {":authority", "edge"},
		{"content-type", "application/grpc"}, {"te", "trailers"},
	} {
		if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			c.t.Fatal(err)
		}
	}
	if err := c.framer.WriteHeaders(http2.HeadersFrameParam{
		StreamID: id, BlockFragment: block.Bytes(), EndHeaders: true,
	}); err != nil {
		c.t.Fatal(err)
	}
	body := append([]byte{0, 0, 0, 0, byte(len(message))}, message...)
	if err := c.framer.WriteData(id, true, body); err != nil {
		c.t.Fatal(err)
	}
	if err := c.conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		c.t.Fatal(err)
	}
	for {
		f, err := c.framer.ReadFrame()
		if err != nil {
			c.t.Fatalf("stream %d: %v", id, err)
		}
		ping, got, err := control(c.framer, f)
		if err != nil {
			c.t.Fatal(err)
		}
		if ping {
			pings++
		}
		settings = append(settings, got...)
		switch f := f.(type) {
		case *http2.HeadersFrame:
			if f.StreamID == id && f.StreamEnded() {
				return pings, settings
			}
		case *http2.RSTStreamFrame:
			c.t.Fatalf("stream %d reset: %v", id, f.ErrCode)
		}
	}
}

func TestTheClientPortSendsNoPingPerCallAndFixedWindows(t *testing.T) {
	n, node := connected(t, 8)
	m := newEdgeMetrics()
	b := &edgeBackend{node: n, metrics: m, relay: newRelayer(nil, m)}
	defer b.relay.close()
	node.leader(true, "")
	waitFor(t, func() bool { s, _ := n.leaderView(); return s.servesHere })
	go func() { // the node answers every call, until the test ends
		for {
			f, err := node.next()
			if err != nil {
				return
			}
			if f.kind == frameRequest {
				node.respond(f.id, 0, nil, []byte("answer"))
			}
		}
	}()

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := newGRPCServer(b, m)
	go func() { _ = server.Serve(lis) }()
	defer server.Stop()

	c := dialRawH2(t, lis.Addr().String())
	pings := 0
	var settings []http2.Setting
	for i := uint32(0); i < 5; i++ { // one call at a time, as one official client thread
		p, s := c.unary(2*i+1, "/google.datastore.v1.Datastore/Lookup", []byte("request"))
		pings += p
		settings = append(settings, s...)
	}
	// With grpc-go's BDP estimation on, the first DATA of each round trip draws a PING.
	if pings != 0 {
		t.Fatalf("the server sent %d PINGs over 5 calls, want none", pings)
	}
	if window := initialWindow(settings); window != streamWindow {
		t.Fatalf("initial stream window %d, want %d", window, streamWindow)
	}
}

// A leader's edge in raw HTTP/2: it answers every gRPC call with `answer` and counts the
// PING frames (not acknowledgements) the calling side sends.
type rawH2Leader struct {
	addr     string
	pings    chan int // the count so far, after each answered call
	settings chan []http2.Setting
}

func serveRawH2Leader(t *testing.T, answer []byte) *rawH2Leader {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	l := &rawH2Leader{addr: lis.Addr().String(), pings: make(chan int, 100), settings: make(chan []http2.Setting, 1)}
	go func() {
		conn, err := lis.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(conn, preface); err != nil {
			return
		}
		framer := http2.NewFramer(conn, conn)
		if framer.WriteSettings() != nil {
			return
		}
		pings := 0
		for {
			f, err := framer.ReadFrame()
			if err != nil {
				return
			}
			ping, got, err := control(framer, f)
			if err != nil {
				return
			}
			if ping {
				pings++
			}
			if got != nil {
				select {
				case l.settings <- got:
				default:
				}
			}
			if f, ok := f.(*http2.DataFrame); ok && f.StreamEnded() {
				var block bytes.Buffer
				enc := hpack.NewEncoder(&block)
				_ = enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
				_ = enc.WriteField(hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
				headers := append([]byte(nil), block.Bytes()...)
				block.Reset()
				_ = enc.WriteField(hpack.HeaderField{Name: "grpc-status", Value: "0"})
				id := f.StreamID
				if framer.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: headers, EndHeaders: true}) != nil ||
					framer.WriteData(id, false, append([]byte{0, 0, 0, 0, byte(len(answer))}, answer...)) != nil ||
					framer.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndHeaders: true, EndStream: true}) != nil {
					return
				}
				l.pings <- pings
			}
		}
	}()
	return l
}

func TestTheRelayerSendsNoPingPerCallAndFixedWindows(t *testing.T) {
	leader := serveRawH2Leader(t, []byte("answer"))
	r := newRelayer(nil, newEdgeMetrics())
	defer r.close()
	pings := 0
	for i := 0; i < 5; i++ { // one relayed call at a time, as for one official-client thread
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		response, _, err := r.forward(ctx, leader.addr, Call{Method: "Lookup", Body: []byte("request"), MD: metadata.MD{}}, 0, nil)
		cancel()
		if err != nil || string(response) != "answer" {
			t.Fatalf("relayed call %d: %q, %v", i, response, err)
		}
		pings = <-leader.pings
	}
	// With grpc-go's BDP estimation on, the first DATA of each answer draws a PING.
	if pings != 0 {
		t.Fatalf("the relayer sent %d PINGs over 5 calls, want none", pings)
	}
	if window := initialWindow(<-leader.settings); window != streamWindow {
		t.Fatalf("the relayer's initial stream window is %d, want %d", window, streamWindow)
	}
}
