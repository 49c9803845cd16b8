// zonestore-edge: the client port of one zonestore replica. It serves
// google.datastore.v1.Datastore over gRPC and the REST surface on one TCP port, and hands
// each call to its Python node over a Unix socket (PROTOCOL.md), or relays it to the
// leader's edge. The node starts it (`zonestore serve --edge auto`), supervises it and
// stops it with SIGTERM; the edge exits when the node's socket closes.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8081", "client address (gRPC and REST)")
	socket := flag.String("node-socket", "", "the node's hand-off Unix socket")
	tlsCert := flag.String("tls-cert", "", "client TLS certificate (PEM)")
	tlsKey := flag.String("tls-key", "", "client TLS key (PEM)")
	tlsCAs := flag.String("tls-client-ca", "", "comma-separated CA files: require client certificates they signed")
	relayCA := flag.String("relay-ca", "", "relays: verify the leader's client port against this CA (TLS)")
	relayCert := flag.String("relay-cert", "", "relays: present this certificate")
	relayKey := flag.String("relay-key", "", "relays: with this key")
	maxInFlight := flag.Int("max-in-flight", 2048, "requests handed to the node at once; beyond: RESOURCE_EXHAUSTED")
	grace := flag.Duration("grace", 5*time.Second, "on SIGTERM, how long in-flight calls may finish")
	procs := flag.Int("procs", 1, "OS threads running Go code at once (GOMAXPROCS; 0: one per core); the GOMAXPROCS variable wins")
	flag.Parse()
	// One is enough and cheaper: everything the edge hands over is served by one Python
	// event loop, which saturates far below what one core of grpc-go answers, and with
	// idle cores Go's scheduler spins looking for work at every hand-off. Measured with
	// make bench (single put, 16 clients, 2 cores): the edge's CPU per call fell from
	// 226 to 151-177 µs, lookups from 151 to 122-130.
	if *procs > 0 && os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(*procs)
	}
	log.SetFlags(0)
	log.SetPrefix("zonestore-edge: ")
	if *socket == "" {
		log.Fatal("--node-socket is required")
	}
	if err := run(*listen, *socket, *tlsCert, *tlsKey, splitList(*tlsCAs), *relayCA, *relayCert,
		*relayKey, *maxInFlight, *grace); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func run(listen, socket, tlsCert, tlsKey string, tlsCAs []string, relayCA, relayCert,
	relayKey string, maxInFlight int, grace time.Duration) error {
	metrics := newEdgeMetrics()
	var serverTLS func() *tls.Config
	if tlsCert != "" {
		reloading, err := newReloadingTLS(tlsCert, tlsKey, tlsCAs)
		if err != nil {
			return err
		}
		serverTLS = reloading.current
	}
	var relayConfig *tls.Config
	if relayCA != "" {
		var err error
		if relayConfig, err = relayTLS(relayCA, relayCert, relayKey); err != nil {
			return fmt.Errorf("relay TLS: %w", err)
		}
	}
	node, err := dialNode(socket, 30*time.Second, maxInFlight, metrics)
	if err != nil {
		return err
	}
	metrics.inFlight = node.inFlight
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	backend := &edgeBackend{node: node, metrics: metrics, relay: newRelayer(relayConfig, metrics)}
	grpcServer := newGRPCServer(backend, metrics)
	httpServer := &http.Server{Handler: NewRESTHandler(backend), ReadHeaderTimeout: 10 * time.Second}
	m := newMux(lis, serverTLS)
	go func() { _ = grpcServer.Serve(m.grpcL) }()
	go func() { _ = httpServer.Serve(m.httpL) }()
	go func() {
		if err := m.serve(); err != nil {
			log.Printf("edge.accept_failed error=%q", err)
		}
	}()
	node.send(controlFrame(frameHello, []byte{protocolVersion}))
	log.Printf("edge.serving client=%s node=%s tls=%t", lis.Addr(), socket, serverTLS != nil)
	go pushMetrics(node, metrics)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-node.Done():
		err, _ := node.closeErr.Load().(error)
		if err == nil || errors.Is(err, net.ErrClosed) {
			return nil
		}
		return fmt.Errorf("the node's socket closed: %w", err)
	case sig := <-signals:
		log.Printf("edge.stopping signal=%s grace=%s", sig, grace)
	}
	lis.Close()
	done := make(chan struct{})
	go func() {
		grpcServer.GracefulStop()
		close(done)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	go func() { _ = httpServer.Shutdown(ctx) }()
	select {
	case <-done:
	case <-ctx.Done():
		grpcServer.Stop()
	case <-node.Done():
		grpcServer.Stop()
	}
	backend.relay.close()
	return nil
}

func pushMetrics(node *nodeConn, metrics *edgeMetrics) {
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	for {
		node.send(controlFrame(frameMetrics, []byte(metrics.render())))
		select {
		case <-ticker.C:
		case <-node.Done():
			return
		}
	}
}
