// The seam between the edge's front doors (gRPC in server.go, REST in rest.go) and what
// serves a call: the Python node over the hand-off socket, or the leader's edge.
package main

import (
	"context"

	"google.golang.org/grpc/metadata"
)

// Call is one google.datastore.v1.Datastore call, as the edge received it.
type Call struct {
	Method string // "Lookup", "RunQuery", "RunAggregationQuery", "BeginTransaction",
	// "Commit", "Rollback", "AllocateIds", "ReserveIds"
	Body []byte      // the serialized request (binary protobuf)
	MD   metadata.MD // incoming metadata: authorization, x-goog-request-params, ...
}

// Backend serves a call the way a gRPC request is served (relayed to the leader's edge
// or handed to the Python node) and returns the serialized response, or an error from
// google.golang.org/grpc/status (status.FromError gives code, message and details).
type Backend interface {
	Invoke(ctx context.Context, call Call) ([]byte, error)
	// Reset deletes all data when the node runs with --allow-reset; otherwise it returns
	// a status error with codes.PermissionDenied and the reason.
	Reset(ctx context.Context) error
}
