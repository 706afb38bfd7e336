package compat

import (
	"context"
	"encoding/base64"
	"net/http"
	"os"
	"testing"
	"time"

	"connectrpc.com/connect"

	pushv1 "github.com/grafana/pyroscope/api/gen/proto/go/push/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/push/v1/pushv1connect"
	querierv1 "github.com/grafana/pyroscope/api/gen/proto/go/querier/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/querier/v1/querierv1connect"
)

// The credentials of the tokens file tests/compat.rs gives the server at PYRITE_AUTH_URL.
const (
	authTenant       = "compat-auth"
	authOtherTenant  = "compat-auth-other"
	authWriterToken  = "compat-writer-token-0001" // write: [compat-auth]
	authGrafanaUser  = "grafana"                  // read: [compat-auth]
	authGrafanaPass  = "compat-grafana-password-01"
	authUnknownToken = "compat-unknown-token-0001"
)

// headerInterceptor sets the tenant and Authorization, as Grafana's data source (basic auth or
// an Authorization custom header) and Alloy's pyroscope.write (bearer_token, headers) do.
func headerInterceptor(tenant, authorization string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("X-Scope-OrgID", tenant)
			if authorization != "" {
				req.Header().Set("Authorization", authorization)
			}
			return next(ctx, req)
		}
	}
}

func basicAuth(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// TestTokenAuth: the official clients against a server with auth.tokens_file: Alloy's push
// with a bearer token, Grafana's queries with basic auth, and the refusals they understand
// (unauthenticated, permission_denied).
func TestTokenAuth(t *testing.T) {
	url := os.Getenv("PYRITE_AUTH_URL")
	if url == "" {
		t.Fatal("PYRITE_AUTH_URL is not set: run these tests through `cargo test --test compat`")
	}
	ctx := context.Background()
	now := time.Now()
	raw := stamped(t, loadProfile(t, "gotarget__cpu_5s.pb.gz"), now)
	pushClient := func(tenant, authorization string) pushv1connect.PusherServiceClient {
		return pushv1connect.NewPusherServiceClient(http.DefaultClient, url,
			connect.WithInterceptors(headerInterceptor(tenant, authorization)))
	}
	querierClient := func(tenant, authorization string) querierv1connect.QuerierServiceClient {
		return querierv1connect.NewQuerierServiceClient(http.DefaultClient, url,
			connect.WithInterceptors(headerInterceptor(tenant, authorization)))
	}
	pushRequest := connect.NewRequest(&pushv1.PushRequest{Series: []*pushv1.RawProfileSeries{{
		Labels:  alloyLabels("process_cpu", "authed"),
		Samples: []*pushv1.RawSample{{RawProfile: raw}},
	}}})
	bearer := "Bearer " + authWriterToken
	grafana := basicAuth(authGrafanaUser, authGrafanaPass)

	_, err := pushClient(authTenant, "").Push(ctx, pushRequest)
	wantCode(t, err, connect.CodeUnauthenticated, "push without credentials")
	_, err = pushClient(authTenant, "Bearer "+authUnknownToken).Push(ctx, pushRequest)
	wantCode(t, err, connect.CodeUnauthenticated, "push with an unknown token")
	_, err = pushClient(authOtherTenant, bearer).Push(ctx, pushRequest)
	wantCode(t, err, connect.CodePermissionDenied, "push to a tenant the token may not write")
	_, err = pushClient(authTenant, grafana).Push(ctx, pushRequest)
	wantCode(t, err, connect.CodePermissionDenied, "push with read-only credentials")
	if _, err := pushClient(authTenant, bearer).Push(ctx, pushRequest); err != nil {
		t.Fatalf("push with the writer token: %v", err)
	}

	// Grafana's "Save & test" and its flame graph, with basic auth.
	q := querierClient(authTenant, grafana)
	if _, err := q.ProfileTypes(ctx, connect.NewRequest(&querierv1.ProfileTypesRequest{Start: 1000, End: 4000})); err != nil {
		t.Fatalf("ProfileTypes (Save & test): %v", err)
	}
	resp, err := q.SelectMergeStacktraces(ctx, connect.NewRequest(&querierv1.SelectMergeStacktracesRequest{
		ProfileTypeID: cpuType, LabelSelector: `{service_name="authed"}`,
		Start: ms(now.Add(-time.Minute)), End: ms(now.Add(time.Minute)),
	}))
	if err != nil {
		t.Fatalf("SelectMergeStacktraces with basic auth: %v", err)
	}
	if resp.Msg.Flamegraph == nil || resp.Msg.Flamegraph.Total == 0 {
		t.Fatalf("the pushed profile is not in the flame graph: %+v", resp.Msg.Flamegraph)
	}

	_, err = querierClient(authOtherTenant, grafana).ProfileTypes(ctx, connect.NewRequest(&querierv1.ProfileTypesRequest{}))
	wantCode(t, err, connect.CodePermissionDenied, "read of a tenant the credentials may not read")
	_, err = querierClient(authTenant, bearer).ProfileTypes(ctx, connect.NewRequest(&querierv1.ProfileTypesRequest{}))
	wantCode(t, err, connect.CodePermissionDenied, "read with a write-only token")
	_, err = querierClient(authTenant, basicAuth(authGrafanaUser, "wrong-password-0000001")).ProfileTypes(ctx, connect.NewRequest(&querierv1.ProfileTypesRequest{}))
	wantCode(t, err, connect.CodeUnauthenticated, "read with a wrong password")
	_, err = querierClient(authTenant, "").ProfileTypes(ctx, connect.NewRequest(&querierv1.ProfileTypesRequest{}))
	wantCode(t, err, connect.CodeUnauthenticated, "read without credentials")
}
