// Unit tests of the REST front door (rest.go) over a fake Backend: paths, both body
// encodings, the project from the path, forwarded metadata, and errors as the Java
// client's RemoteRpc and JSON clients parse them.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"cloud.google.com/go/datastore/apiv1/datastorepb"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// fakeBackend records the calls it gets and answers with a canned response or error.
type fakeBackend struct {
	calls    []Call
	ctxMD    metadata.MD
	response proto.Message
	err      error
	resetErr error
	resets   int
}

func (f *fakeBackend) Invoke(ctx context.Context, call Call) ([]byte, error) {
	f.calls = append(f.calls, call)
	f.ctxMD, _ = metadata.FromIncomingContext(ctx)
	if f.err != nil {
		return nil, f.err
	}
	return proto.Marshal(f.response)
}

func (f *fakeBackend) Reset(context.Context) error {
	f.resets++
	return f.resetErr
}

func serve(t *testing.T, b Backend, method, path, contentType string, body []byte, header map[string]string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	NewRESTHandler(b).ServeHTTP(rec, req)
	return rec.Result()
}

func readAll(t *testing.T, r *http.Response) []byte {
	t.Helper()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func lookupRequest() *datastorepb.LookupRequest {
	return &datastorepb.LookupRequest{Keys: []*datastorepb.Key{{
		Path: []*datastorepb.Key_PathElement{{Kind: "User", IdType: &datastorepb.Key_PathElement_Name{Name: "John Doe"}}},
	}}}
}

func TestRootAnswersOk(t *testing.T) {
	resp := serve(t, &fakeBackend{}, http.MethodGet, "/", "", nil, nil)
	if resp.StatusCode != 200 || strings.TrimSpace(string(readAll(t, resp))) != "Ok" {
		t.Fatalf("GET / = %d", resp.StatusCode)
	}
}

func TestProtobufLookupReachesTheBackendWithThePathsProjectAndHeaders(t *testing.T) {
	want := &datastorepb.LookupResponse{Found: []*datastorepb.EntityResult{{Version: 7}}}
	b := &fakeBackend{response: want}
	body, _ := proto.Marshal(lookupRequest())
	resp := serve(t, b, http.MethodPost, "/v1/projects/demo:lookup", "application/x-protobuf", body, map[string]string{
		"x-goog-request-params": "project_id=demo&database_id=db2",
		"Authorization":         "Bearer t0ken",
		"X-Goog-Api-Client":     "java/17",
	})
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-protobuf" {
		t.Fatalf("status %d type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	got := new(datastorepb.LookupResponse)
	if err := proto.Unmarshal(readAll(t, resp), got); err != nil || !proto.Equal(got, want) {
		t.Fatalf("response %v (%v)", got, err)
	}
	if len(b.calls) != 1 || b.calls[0].Method != "Lookup" {
		t.Fatalf("calls %+v", b.calls)
	}
	sent := new(datastorepb.LookupRequest)
	if err := proto.Unmarshal(b.calls[0].Body, sent); err != nil {
		t.Fatal(err)
	}
	if sent.ProjectId != "demo" || sent.Keys[0].Path[0].GetName() != "John Doe" {
		t.Fatalf("the backend got %v", sent)
	}
	md := b.calls[0].MD
	if md.Get("x-goog-request-params")[0] != "project_id=demo&database_id=db2" ||
		md.Get("authorization")[0] != "Bearer t0ken" || md.Get("x-goog-api-client")[0] != "java/17" {
		t.Fatalf("metadata %v", md)
	}
	if b.ctxMD.Get("authorization")[0] != "Bearer t0ken" {
		t.Fatalf("context metadata %v", b.ctxMD)
	}
}

func TestThePathsProjectOverridesTheBodysAndMayHoldAColon(t *testing.T) {
	b := &fakeBackend{response: &datastorepb.CommitResponse{}}
	req := &datastorepb.CommitRequest{ProjectId: "elsewhere", Mode: datastorepb.CommitRequest_NON_TRANSACTIONAL}
	body, _ := proto.Marshal(req)
	resp := serve(t, b, http.MethodPost, "/v1/projects/example.com:app:commit", "application/x-protobuf", body, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, readAll(t, resp))
	}
	sent := new(datastorepb.CommitRequest)
	_ = proto.Unmarshal(b.calls[0].Body, sent)
	if sent.ProjectId != "example.com:app" || b.calls[0].Method != "Commit" {
		t.Fatalf("sent %v to %s", sent, b.calls[0].Method)
	}
	if got := b.calls[0].MD.Get("x-goog-request-params"); len(got) != 1 || got[0] != "project_id=example.com%3Aapp" {
		t.Fatalf("routing header made from the path: %v", got)
	}
}

func TestEveryVerbMapsToItsGRPCMethod(t *testing.T) {
	for verb, grpcName := range map[string]string{
		"lookup": "Lookup", "runQuery": "RunQuery", "runAggregationQuery": "RunAggregationQuery",
		"beginTransaction": "BeginTransaction", "commit": "Commit", "rollback": "Rollback",
		"allocateIds": "AllocateIds", "reserveIds": "ReserveIds",
	} {
		b := &fakeBackend{response: restMethods[verb].newResponse()}
		resp := serve(t, b, http.MethodPost, "/v1/projects/p:"+verb, "application/json", []byte("{}"), nil)
		if resp.StatusCode != 200 || len(b.calls) != 1 || b.calls[0].Method != grpcName {
			t.Fatalf("%s: status %d calls %+v", verb, resp.StatusCode, b.calls)
		}
	}
}

func TestJSONBodiesUseTheProto3JSONMapping(t *testing.T) {
	b := &fakeBackend{response: &datastorepb.LookupResponse{
		Missing: []*datastorepb.EntityResult{{Entity: &datastorepb.Entity{Key: lookupRequest().Keys[0]}, Version: 1}},
	}}
	resp := serve(t, b, http.MethodPost, "/v1/projects/demo:lookup", "application/json; charset=utf-8",
		[]byte(`{"readOptions": {"readConsistency": "STRONG"}, "keys": [{"path": [{"kind": "User", "name": "John Doe"}]}]}`), nil)
	body := readAll(t, resp)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("status %d type %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var decoded struct {
		Missing []struct {
			Entity struct {
				Key struct{ Path []map[string]string }
			}
			Version string // int64 is a string in proto3 JSON
		}
	}
	if err := json.Unmarshal(body, &decoded); err != nil || decoded.Missing[0].Version != "1" ||
		decoded.Missing[0].Entity.Key.Path[0]["name"] != "John Doe" {
		t.Fatalf("decoded %+v from %s (%v)", decoded, body, err)
	}
	sent := new(datastorepb.LookupRequest)
	_ = proto.Unmarshal(b.calls[0].Body, sent)
	if sent.ProjectId != "demo" || sent.ReadOptions.GetReadConsistency() != datastorepb.ReadOptions_STRONG {
		t.Fatalf("sent %v", sent)
	}
}

func TestABackendErrorIsAProtobufStatusForTheJavaClient(t *testing.T) {
	cases := map[codes.Code]int{
		codes.InvalidArgument: 400, codes.NotFound: 404, codes.Aborted: 409, codes.AlreadyExists: 409,
		codes.PermissionDenied: 403, codes.Unauthenticated: 401, codes.ResourceExhausted: 429,
		codes.FailedPrecondition: 400, codes.Unavailable: 503, codes.DeadlineExceeded: 504,
		codes.Unimplemented: 501, codes.Internal: 500, codes.Unknown: 500,
	}
	for code, httpStatus := range cases {
		b := &fakeBackend{err: status.Error(code, "because "+code.String())}
		body, _ := proto.Marshal(lookupRequest())
		resp := serve(t, b, http.MethodPost, "/v1/projects/demo:lookup", "application/x-protobuf", body, nil)
		// RemoteRpc compares the content type with equals(): no parameters allowed.
		if resp.StatusCode != httpStatus || resp.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Fatalf("%s: status %d type %q", code, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		st := new(spb.Status)
		if err := proto.Unmarshal(readAll(t, resp), st); err != nil || codes.Code(st.Code) != code ||
			st.Message != "because "+code.String() {
			t.Fatalf("%s: status body %v (%v)", code, st, err)
		}
	}
}

func TestABackendErrorIsGooglesJSONEnvelopeForJSONClients(t *testing.T) {
	b := &fakeBackend{err: status.Error(codes.Aborted, "too much contention on these datastore entities")}
	resp := serve(t, b, http.MethodPost, "/v1/projects/demo:commit", "application/json", []byte(`{"mode": "TRANSACTIONAL"}`), nil)
	body := readAll(t, resp)
	if resp.StatusCode != 409 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("status %d type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var envelope map[string]map[string]any
	if err := json.Unmarshal(body, &envelope); err != nil {
		t.Fatal(err)
	}
	e := envelope["error"]
	if e["code"] != float64(409) || e["status"] != "ABORTED" || e["message"] != "too much contention on these datastore entities" {
		t.Fatalf("error envelope %s", body)
	}
}

func TestABodyThatDoesNotParseIsInvalidArgumentInTheRequestsEncoding(t *testing.T) {
	b := &fakeBackend{}
	resp := serve(t, b, http.MethodPost, "/v1/projects/demo:lookup", "application/json", []byte(`{"bogus": 1}`), nil)
	body := readAll(t, resp)
	if resp.StatusCode != 400 || !strings.Contains(string(body), `"status":"INVALID_ARGUMENT"`) {
		t.Fatalf("json: %d %s", resp.StatusCode, body)
	}
	resp = serve(t, b, http.MethodPost, "/v1/projects/demo:lookup", "application/x-protobuf", []byte{0xff, 0xff, 0xff}, nil)
	st := new(spb.Status)
	if err := proto.Unmarshal(readAll(t, resp), st); resp.StatusCode != 400 || err != nil || codes.Code(st.Code) != codes.InvalidArgument {
		t.Fatalf("protobuf: %d %v", resp.StatusCode, st)
	}
	if len(b.calls) != 0 {
		t.Fatalf("a bad body reached the backend: %+v", b.calls)
	}
}

func TestAnOversizedBodyIsRefusedBeforeTheBackend(t *testing.T) {
	b := &fakeBackend{}
	resp := serve(t, b, http.MethodPost, "/v1/projects/demo:commit", "application/x-protobuf", make([]byte, maxRequestBytes+1), nil)
	if resp.StatusCode != 400 || len(b.calls) != 0 {
		t.Fatalf("status %d, calls %d", resp.StatusCode, len(b.calls))
	}
}

func TestUnknownPathsAndVerbsAreNotFound(t *testing.T) {
	b := &fakeBackend{}
	for _, c := range []struct{ method, path string }{
		{http.MethodPost, "/v1/projects/demo:frobnicate"},
		{http.MethodGet, "/v1/projects/demo:lookup"},
		{http.MethodPost, "/v1/projects/:lookup"},
		{http.MethodPost, "/v1/projects/a/b:lookup"},
		{http.MethodPost, "/v2/projects/demo:lookup"},
		{http.MethodGet, "/reset"},
	} {
		resp := serve(t, b, c.method, c.path, "application/json", []byte("{}"), nil)
		if resp.StatusCode != 404 {
			t.Fatalf("%s %s = %d", c.method, c.path, resp.StatusCode)
		}
	}
	if len(b.calls) != 0 || b.resets != 0 {
		t.Fatalf("reached the backend: %+v", b.calls)
	}
}

func TestABodyOfAnotherTypeIs415AndAnEmptyJSONBodyIsAnEmptyRequest(t *testing.T) {
	b := &fakeBackend{response: &datastorepb.BeginTransactionResponse{Transaction: []byte("t")}}
	for _, contentType := range []string{"", "text/plain", "application/x-www-form-urlencoded"} {
		resp := serve(t, b, http.MethodPost, "/v1/projects/demo:lookup", contentType, []byte("{}"), nil)
		if resp.StatusCode != http.StatusUnsupportedMediaType {
			t.Fatalf("%q: %d", contentType, resp.StatusCode)
		}
	}
	resp := serve(t, b, http.MethodPost, "/v1/projects/demo:beginTransaction", "application/json", nil, nil)
	var decoded map[string]string // protojson's spacing is deliberately unstable: decode
	if body := readAll(t, resp); resp.StatusCode != 200 || json.Unmarshal(body, &decoded) != nil || decoded["transaction"] != "dA==" {
		t.Fatalf("empty JSON body: %d %s", resp.StatusCode, body)
	}
	if len(b.calls) != 1 || b.calls[0].Method != "BeginTransaction" {
		t.Fatalf("calls %+v", b.calls)
	}
}

func TestResetIs200WhenAllowedAnd403WithTheReasonOtherwise(t *testing.T) {
	b := &fakeBackend{}
	if resp := serve(t, b, http.MethodPost, "/reset", "", nil, nil); resp.StatusCode != 200 || b.resets != 1 {
		t.Fatalf("allowed reset: %d", resp.StatusCode)
	}
	b.resetErr = status.Error(codes.PermissionDenied, "reset is off: start the node with --allow-reset")
	resp := serve(t, b, http.MethodPost, "/reset", "", nil, nil)
	if body := string(readAll(t, resp)); resp.StatusCode != 403 || !strings.Contains(body, "--allow-reset") {
		t.Fatalf("refused reset: %d %q", resp.StatusCode, body)
	}
}
