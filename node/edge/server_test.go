package main

import (
	"bytes"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
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
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := f.ForeachSetting(func(s http2.Setting) error {
					settings = append(settings, s)
					return nil
				}); err != nil {
					c.t.Fatal(err)
				}
				if err := c.framer.WriteSettingsAck(); err != nil {
					c.t.Fatal(err)
				}
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				pings++
				if err := c.framer.WritePing(true, f.Data); err != nil {
					c.t.Fatal(err)
				}
			}
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
	window := uint32(0)
	for _, s := range settings {
		if s.ID == http2.SettingInitialWindowSize {
			window = s.Val
		}
	}
	if window != streamWindow {
		t.Fatalf("initial stream window %d, want %d", window, streamWindow)
	}
}
