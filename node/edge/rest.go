// The REST front door: the HTTP surface that Google's Datastore emulator and production
// serve next to gRPC, on top of the same Backend the gRPC server uses.
//
//	POST /v1/projects/{project}:{lookup|runQuery|runAggregationQuery|beginTransaction|
//	                             commit|rollback|allocateIds|reserveIds}
//	GET  /        -> "Ok"                      (the emulator's liveness answer)
//	POST /reset   -> Backend.Reset             (200, or 403 with the reason)
//
// A body is either binary protobuf (Content-Type application/x-protobuf: what the
// official Java client's RemoteRpc sends) or the proto3 JSON mapping (application/json:
// curl and REST clients). The answer, and an error's google.rpc.Status, come back in the
// request's encoding; an error's HTTP status is the gRPC code's standard one. The
// project in the path is written into the request's project_id (the path wins, as the
// URL is what the client addressed). This file translates and nothing else: it never
// looks inside a Datastore message beyond project_id.
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"cloud.google.com/go/datastore/apiv1/datastorepb"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

const (
	protobufType = "application/x-protobuf"
	jsonType     = "application/json"
	// What the emulator says for a body that does not parse as the method's request.
	invalidPayload = "Payload isn't valid for request."
)

// datastoreRequest is what every google.datastore.v1 request message has in common here.
type datastoreRequest interface {
	proto.Message
	GetProjectId() string
}

// restMethod is one REST verb: the gRPC method it is and its message types.
type restMethod struct {
	grpcName    string
	newRequest  func() datastoreRequest
	newResponse func() proto.Message
	setProject  func(datastoreRequest, string)
}

func method[Req interface {
	datastoreRequest
	*R
}, R any, Resp proto.Message](grpcName string, newResp func() Resp, set func(Req, string)) restMethod {
	return restMethod{
		grpcName:    grpcName,
		newRequest:  func() datastoreRequest { return Req(new(R)) },
		newResponse: func() proto.Message { return newResp() },
		setProject:  func(r datastoreRequest, p string) { set(r.(Req), p) },
	}
}

// restMethods maps the REST verb (after the colon) to its gRPC method.
var restMethods = map[string]restMethod{
	"lookup": method[*datastorepb.LookupRequest]("Lookup",
		func() *datastorepb.LookupResponse { return new(datastorepb.LookupResponse) },
		func(r *datastorepb.LookupRequest, p string) { r.ProjectId = p }),
	"runQuery": method[*datastorepb.RunQueryRequest]("RunQuery",
		func() *datastorepb.RunQueryResponse { return new(datastorepb.RunQueryResponse) },
		func(r *datastorepb.RunQueryRequest, p string) { r.ProjectId = p }),
	"runAggregationQuery": method[*datastorepb.RunAggregationQueryRequest]("RunAggregationQuery",
		func() *datastorepb.RunAggregationQueryResponse {
			return new(datastorepb.RunAggregationQueryResponse)
		},
		func(r *datastorepb.RunAggregationQueryRequest, p string) { r.ProjectId = p }),
	"beginTransaction": method[*datastorepb.BeginTransactionRequest]("BeginTransaction",
		func() *datastorepb.BeginTransactionResponse {
			return new(datastorepb.BeginTransactionResponse)
		},
		func(r *datastorepb.BeginTransactionRequest, p string) { r.ProjectId = p }),
	"commit": method[*datastorepb.CommitRequest]("Commit",
		func() *datastorepb.CommitResponse { return new(datastorepb.CommitResponse) },
		func(r *datastorepb.CommitRequest, p string) { r.ProjectId = p }),
	"rollback": method[*datastorepb.RollbackRequest]("Rollback",
		func() *datastorepb.RollbackResponse { return new(datastorepb.RollbackResponse) },
		func(r *datastorepb.RollbackRequest, p string) { r.ProjectId = p }),
	"allocateIds": method[*datastorepb.AllocateIdsRequest]("AllocateIds",
		func() *datastorepb.AllocateIdsResponse { return new(datastorepb.AllocateIdsResponse) },
		func(r *datastorepb.AllocateIdsRequest, p string) { r.ProjectId = p }),
	"reserveIds": method[*datastorepb.ReserveIdsRequest]("ReserveIds",
		func() *datastorepb.ReserveIdsResponse { return new(datastorepb.ReserveIdsResponse) },
		func(r *datastorepb.ReserveIdsRequest, p string) { r.ProjectId = p }),
}

// forwardedHeaders are the request headers carried into Call.MD (lower case, as gRPC
// metadata keys are), besides every x-goog-* header.
var forwardedHeaders = []string{"authorization", "user-agent"}

// NewRESTHandler serves the emulator's/production's REST surface on top of a Backend:
// POST /v1/projects/{project}:{lookup|runQuery|runAggregationQuery|beginTransaction|
// commit|rollback|allocateIds|reserveIds} with application/x-protobuf or application/json
// bodies; GET / -> "Ok"; POST /reset -> Backend.Reset (200 on success, 403 + reason
// otherwise).
func NewRESTHandler(b Backend) http.Handler {
	return &restHandler{backend: b}
}

type restHandler struct {
	backend Backend
}

func (h *restHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "Ok\n")
	case r.URL.Path == "/reset" && r.Method == http.MethodPost:
		h.reset(w, r)
	case strings.HasPrefix(r.URL.Path, "/v1/projects/") && r.Method == http.MethodPost:
		h.call(w, r)
	default:
		notFound(w)
	}
}

func (h *restHandler) reset(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := h.backend.Reset(r.Context()); err != nil {
		st := status.Convert(err)
		httpStatus := http.StatusForbidden
		if st.Code() != codes.PermissionDenied {
			httpStatus = httpStatusFromCode(st.Code())
		}
		w.WriteHeader(httpStatus)
		_, _ = io.WriteString(w, st.Message()+"\n")
		return
	}
	_, _ = io.WriteString(w, "Resetting...\n") // the emulator's words
}

// splitCallPath parses "/v1/projects/{project}:{verb}". A project id may itself hold a
// colon (domain-scoped projects, "example.com:app"), so the verb follows the last one.
func splitCallPath(escapedPath string) (project, verb string, ok bool) {
	rest, ok := strings.CutPrefix(escapedPath, "/v1/projects/")
	if !ok {
		return "", "", false
	}
	i := strings.LastIndexByte(rest, ':')
	if i <= 0 || strings.Contains(rest[:i], "/") {
		return "", "", false
	}
	project, err := url.PathUnescape(rest[:i])
	if err != nil || project == "" {
		return "", "", false
	}
	return project, rest[i+1:], true
}

func (h *restHandler) call(w http.ResponseWriter, r *http.Request) {
	project, verb, ok := splitCallPath(r.URL.EscapedPath())
	m, known := restMethods[verb]
	if !ok || !known {
		notFound(w)
		return
	}
	binary, supported := bodyEncoding(r.Header.Get("Content-Type"))
	if !supported {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusUnsupportedMediaType)
		_, _ = io.WriteString(w, "Content-Type must be "+protobufType+" or "+jsonType+"\n")
		return
	}
	body, err := readBody(r)
	if err != nil {
		writeError(w, binary, err)
		return
	}
	request := m.newRequest()
	if binary {
		err = proto.Unmarshal(body, request)
	} else if len(bytes.TrimSpace(body)) > 0 { // an empty JSON body is {}, as the emulator reads it
		err = protojson.Unmarshal(body, request)
	}
	if err != nil {
		writeError(w, binary, status.Error(codes.InvalidArgument, invalidPayload))
		return
	}
	m.setProject(request, project)
	serialized, err := proto.Marshal(request)
	if err != nil {
		writeError(w, binary, status.Errorf(codes.Internal, "re-encoding the request: %v", err))
		return
	}
	ctx := r.Context()
	md := callMetadata(r.Header, project)
	ctx = metadata.NewIncomingContext(ctx, md)
	response, err := h.backend.Invoke(ctx, Call{Method: m.grpcName, Body: serialized, MD: md})
	if err != nil {
		writeError(w, binary, err)
		return
	}
	if binary {
		w.Header().Set("Content-Type", protobufType)
		_, _ = w.Write(response)
		return
	}
	decoded := m.newResponse()
	if err := proto.Unmarshal(response, decoded); err != nil {
		writeError(w, false, status.Errorf(codes.Internal, "the node's %s response does not parse: %v", m.grpcName, err))
		return
	}
	out, err := protojson.Marshal(decoded)
	if err != nil {
		writeError(w, false, status.Errorf(codes.Internal, "encoding the response as JSON: %v", err))
		return
	}
	w.Header().Set("Content-Type", jsonType+"; charset=UTF-8")
	_, _ = w.Write(out)
}

// bodyEncoding tells a binary body from a JSON one. Any other type (curl's default form
// type, none at all) is refused with 415, where the emulator answers a bare 404.
func bodyEncoding(contentType string) (binary, supported bool) {
	mediaType, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false, false
	}
	return mediaType == protobufType, mediaType == protobufType || mediaType == jsonType
}

// notFound answers as the emulator does for a path it does not serve.
func notFound(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusNotFound)
	_, _ = io.WriteString(w, "Not Found\n")
}

// readBody reads the request body (gunzipped when the client compressed it), refusing
// one larger than the gRPC server would take.
func readBody(r *http.Request) ([]byte, error) {
	var reader io.Reader = r.Body
	if strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip") {
		gz, err := gzip.NewReader(r.Body)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, invalidPayload)
		}
		defer gz.Close()
		reader = gz
	}
	body, err := io.ReadAll(io.LimitReader(reader, maxRequestBytes+1))
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return nil, status.Error(codes.Canceled, "the client went away")
		}
		return nil, status.Errorf(codes.InvalidArgument, "reading the request body: %v", err)
	}
	if len(body) > maxRequestBytes {
		return nil, status.Errorf(codes.InvalidArgument,
			"request payload size exceeds the limit: %d bytes", maxRequestBytes)
	}
	return body, nil
}

// callMetadata carries the headers the node uses into gRPC-style metadata. A client that
// sent no routing header (curl) gets the one the gRPC clients send, from the path.
func callMetadata(header http.Header, project string) metadata.MD {
	md := metadata.MD{}
	for name, values := range header {
		lower := strings.ToLower(name)
		if strings.HasPrefix(lower, "x-goog-") {
			md[lower] = append(md[lower], values...)
		}
	}
	for _, name := range forwardedHeaders {
		if values := header.Values(name); len(values) > 0 {
			md[name] = append([]string(nil), values...)
		}
	}
	if len(md["x-goog-request-params"]) == 0 {
		md["x-goog-request-params"] = []string{"project_id=" + url.QueryEscape(project)}
	}
	return md
}

// httpStatusFromCode is the standard mapping of a gRPC code to an HTTP status, the one
// Google's REST APIs (and grpc-gateway) use.
func httpStatusFromCode(code codes.Code) int {
	switch code {
	case codes.OK:
		return http.StatusOK
	case codes.Canceled:
		return 499 // "Client Closed Request", as Google's APIs answer
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	default: // Unknown, Internal, DataLoss
		return http.StatusInternalServerError
	}
}

// jsonError is Google's JSON error envelope: {"error": {"code": <HTTP status>,
// "message": ..., "status": "INVALID_ARGUMENT", "details": [...]}}.
type jsonError struct {
	Error jsonErrorBody `json:"error"`
}

type jsonErrorBody struct {
	Code    int               `json:"code"`
	Message string            `json:"message"`
	Status  string            `json:"status"`
	Details []json.RawMessage `json:"details,omitempty"`
}

// writeError answers a failed call: the gRPC code's HTTP status, and the
// google.rpc.Status as binary protobuf (what RemoteRpc parses: it requires exactly
// Content-Type application/x-protobuf) or in Google's JSON error envelope.
func writeError(w http.ResponseWriter, binary bool, err error) {
	st := status.Convert(err)
	httpStatus := httpStatusFromCode(st.Code())
	if binary {
		body, merr := proto.Marshal(st.Proto())
		if merr != nil {
			body, _ = proto.Marshal(&spb.Status{Code: st.Proto().GetCode(), Message: st.Message()})
		}
		w.Header().Set("Content-Type", protobufType)
		w.WriteHeader(httpStatus)
		_, _ = w.Write(body)
		return
	}
	envelope := jsonError{Error: jsonErrorBody{
		Code:    httpStatus,
		Message: st.Message(),
		Status:  codeName(st.Code()),
	}}
	for _, detail := range st.Proto().GetDetails() {
		// A detail whose type this binary does not know is left out rather than failing
		// the whole answer.
		if encoded, derr := protojson.Marshal(detail); derr == nil {
			envelope.Error.Details = append(envelope.Error.Details, encoded)
		}
	}
	body, _ := json.Marshal(envelope)
	w.Header().Set("Content-Type", jsonType+"; charset=UTF-8")
	w.WriteHeader(httpStatus)
	_, _ = w.Write(body)
}

// codeName is the canonical upper-case name of a code ("INVALID_ARGUMENT"), as
// google.rpc.Code spells it in JSON errors.
func codeName(code codes.Code) string {
	if name, ok := codeNames[code]; ok {
		return name
	}
	return fmt.Sprintf("CODE_%d", uint32(code))
}

var codeNames = map[codes.Code]string{
	codes.OK:                 "OK",
	codes.Canceled:           "CANCELLED",
	codes.Unknown:            "UNKNOWN",
	codes.InvalidArgument:    "INVALID_ARGUMENT",
	codes.DeadlineExceeded:   "DEADLINE_EXCEEDED",
	codes.NotFound:           "NOT_FOUND",
	codes.AlreadyExists:      "ALREADY_EXISTS",
	codes.PermissionDenied:   "PERMISSION_DENIED",
	codes.ResourceExhausted:  "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION",
	codes.Aborted:            "ABORTED",
	codes.OutOfRange:         "OUT_OF_RANGE",
	codes.Unimplemented:      "UNIMPLEMENTED",
	codes.Internal:           "INTERNAL",
	codes.Unavailable:        "UNAVAILABLE",
	codes.DataLoss:           "DATA_LOSS",
	codes.Unauthenticated:    "UNAUTHENTICATED",
}
