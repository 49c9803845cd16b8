package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func TestAdminAndOperationsPathsAreServedAndNamedByService(t *testing.T) {
	cases := []struct {
		path, method string
		ok           bool
	}{
		{"/google.datastore.v1.Datastore/Commit", "Commit", true},
		{"/google.datastore.admin.v1.DatastoreAdmin/ExportEntities", "DatastoreAdmin/ExportEntities", true},
		{"/google.datastore.admin.v1.DatastoreAdmin/ListIndexes", "DatastoreAdmin/ListIndexes", true},
		{"/google.longrunning.Operations/GetOperation", "Operations/GetOperation", true},
		{"/google.longrunning.Operations/DeleteOperation", "Operations/DeleteOperation", true},
		{"/google.longrunning.Operations/WaitOperation", "", false},
		{"/google.datastore.v1.Datastore/ExportEntities", "", false}, // not Datastore's
		{"/google.datastore.admin.v1.DatastoreAdmin/Commit", "", false},
		{"/google.firestore.v1.Firestore/Commit", "", false},
		{"/nonsense", "", false},
	}
	for _, c := range cases {
		method, ok := methodOf(c.path)
		if ok != c.ok || (ok && method != c.method) {
			t.Errorf("methodOf(%s) = %q, %v; want %q, %v", c.path, method, ok, c.method, c.ok)
		}
		if ok && pathOf(method) != c.path {
			t.Errorf("pathOf(%s) = %s, want %s", method, pathOf(method), c.path)
		}
	}
	// The wire numbers handoff.py's METHODS table relies on.
	if methodIndex["DatastoreAdmin/ExportEntities"] != 8 || methodIndex["Operations/DeleteOperation"] != 17 {
		t.Fatalf("wire numbers moved: %v", methodIndex)
	}
}

func TestAdminCallsStayOnTheReceivingReplicaButIndexChangesNeedTheLeader(t *testing.T) {
	for _, m := range []string{
		"DatastoreAdmin/ExportEntities", "DatastoreAdmin/ImportEntities",
		"DatastoreAdmin/GetIndex", "DatastoreAdmin/ListIndexes",
		"Operations/GetOperation", "Operations/ListOperations",
		"Operations/CancelOperation", "Operations/DeleteOperation",
	} {
		if needsLeader(m, nil) {
			t.Errorf("%s would be relayed to the leader", m)
		}
	}
	for _, m := range []string{"DatastoreAdmin/CreateIndex", "DatastoreAdmin/DeleteIndex"} {
		if !needsLeader(m, nil) {
			t.Errorf("%s would be served by a follower", m)
		}
	}
}

// Through the real gRPC server: a follower's edge hands an operation's GetOperation to
// its own node (not to the leader), relays CreateIndex, refuses an unknown method, and
// labels its metrics by method.
func TestAFollowersEdgeHandsOperationsToItsNodeAndLabelsThemByMethod(t *testing.T) {
	n, node := connected(t, 8)
	m := newEdgeMetrics()
	b := &edgeBackend{node: n, metrics: m, relay: newRelayer(nil, m)}
	defer b.relay.close()
	node.leader(false, "127.0.0.1:1") // another replica leads, unreachable
	waitFor(t, func() bool { s, _ := n.leaderView(); return s.addr != "" })

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := newGRPCServer(b, m)
	go server.Serve(lis)
	defer server.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	done := make(chan error, 1)
	var response []byte
	go func() {
		request := []byte("name")
		done <- conn.Invoke(ctx, "/google.longrunning.Operations/GetOperation", &request, &response)
	}()
	f := node.read()
	if f.kind != frameRequest || f.payload[0] != methodIndex["Operations/GetOperation"] {
		t.Fatalf("not handed to the node as GetOperation: %+v", f)
	}
	node.respond(f.id, 0, [][2]string{{answeredKey, "1"}}, []byte("operation"))
	if err := <-done; err != nil || string(response) != "operation" {
		t.Fatalf("GetOperation: %v %q", err, response)
	}

	request := []byte{}
	err = conn.Invoke(ctx, "/google.datastore.admin.v1.DatastoreAdmin/CreateIndex", &request, &response)
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "leader") {
		t.Fatalf("CreateIndex on a follower was not relayed to the (dead) leader: %v", err)
	}
	err = conn.Invoke(ctx, "/google.longrunning.Operations/WaitOperation", &request, &response)
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("WaitOperation: %v", err)
	}

	text := m.render()
	for _, want := range []string{
		`zonestore_edge_requests_total{method="Operations/GetOperation",code="OK"} 1`,
		`zonestore_edge_requests_total{method="DatastoreAdmin/CreateIndex",code="Unavailable"} 1`,
		`zonestore_edge_relays_total{method="DatastoreAdmin/CreateIndex",outcome=`,
		`zonestore_edge_requests_total{method="unknown",code="Unimplemented"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s:\n%s", want, text)
		}
	}
}
