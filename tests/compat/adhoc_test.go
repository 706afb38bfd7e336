package compat

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"

	"connectrpc.com/connect"

	adhocprofilesv1 "github.com/grafana/pyroscope/api/gen/proto/go/adhocprofiles/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/adhocprofiles/v1/adhocprofilesv1connect"
	capabilitiesv1 "github.com/grafana/pyroscope/api/gen/proto/go/capabilities/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/capabilities/v1/capabilitiesv1connect"
	statusv1 "github.com/grafana/pyroscope/api/gen/proto/go/status/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/status/v1/statusv1connect"
	versionv1 "github.com/grafana/pyroscope/api/gen/proto/go/version/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/version/v1/versionv1connect"
)

func adhocClient(url, tenant string, opts ...connect.ClientOption) adhocprofilesv1connect.AdHocProfileServiceClient {
	opts = append(opts, connect.WithInterceptors(tenantInterceptor(tenant)))
	return adhocprofilesv1connect.NewAdHocProfileServiceClient(http.DefaultClient, url, opts...)
}

// adhocTicks is the flamebearer's numTicks: the total of the type drawn.
func adhocTicks(t *testing.T, flamebearer string) int64 {
	t.Helper()
	var fb struct {
		Flamebearer struct {
			NumTicks int64     `json:"numTicks"`
			Levels   [][]int64 `json:"levels"`
			Names    []string  `json:"names"`
		} `json:"flamebearer"`
	}
	if err := json.Unmarshal([]byte(flamebearer), &fb); err != nil {
		t.Fatalf("flamebearer JSON: %v", err)
	}
	if fb.Flamebearer.NumTicks != 0 && fb.Flamebearer.Levels[0][1] != fb.Flamebearer.NumTicks {
		t.Fatalf("root %v != numTicks %d", fb.Flamebearer.Levels[0], fb.Flamebearer.NumTicks)
	}
	return fb.Flamebearer.NumTicks
}

// TestAdHocProfiles uploads corpus files with the official adhocprofiles.v1 client (proto and
// JSON, as the Drilldown app's Go backend and its browser code), reads every sample type back
// with Get and checks it totals what github.com/google/pprof/profile counts, then lists them.
func TestAdHocProfiles(t *testing.T) {
	ctx := context.Background()
	files := []string{"gotarget__cpu_5s.pb.gz", "ddnotes_memory-profiler.pprof", "pyroscope__pprof_heap", "parca_fib.pb.gz"}
	for name, opts := range map[string][]connect.ClientOption{
		"proto": nil,
		"json":  {connect.WithProtoJSON()},
	} {
		t.Run(name, func(t *testing.T) {
			tenant := newTenant("adhoc")
			client := adhocClient(serverURL(t), tenant, opts...)
			ids := map[string]string{}
			for _, file := range files {
				raw, err := os.ReadFile(corpusPath(t, file))
				if err != nil {
					t.Fatal(err)
				}
				want := loadProfile(t, file)
				up, err := client.Upload(ctx, connect.NewRequest(&adhocprofilesv1.AdHocProfilesUploadRequest{
					Name:    file,
					Profile: base64.StdEncoding.EncodeToString(raw),
				}))
				if err != nil {
					t.Fatalf("Upload %s: %v", file, err)
				}
				if len(up.Msg.ProfileTypes) != len(want.SampleType) || up.Msg.ProfileType != want.SampleType[0].Type {
					t.Fatalf("%s: types %v / %q, want %v", file, up.Msg.ProfileTypes, up.Msg.ProfileType, want.SampleType)
				}
				if got := adhocTicks(t, up.Msg.FlamebearerProfile); got != total(want, 0, nil) {
					t.Fatalf("%s upload: numTicks %d, want %d", file, got, total(want, 0, nil))
				}
				ids[up.Msg.Id] = file
				for i, st := range want.SampleType {
					typ := up.Msg.ProfileTypes[i]
					if typ != st.Type {
						t.Fatalf("%s: type %d is %q, want %q", file, i, typ, st.Type)
					}
					got, err := client.Get(ctx, connect.NewRequest(&adhocprofilesv1.AdHocProfilesGetRequest{
						Id:          up.Msg.Id,
						ProfileType: &typ,
					}))
					if err != nil {
						t.Fatalf("Get %s %s: %v", file, typ, err)
					}
					if got.Msg.Name != file || got.Msg.ProfileType != typ || got.Msg.UploadedAt != up.Msg.UploadedAt {
						t.Fatalf("Get %s: %+v", file, got.Msg)
					}
					if ticks := adhocTicks(t, got.Msg.FlamebearerProfile); ticks != total(want, i, nil) {
						t.Fatalf("%s %s: numTicks %d, want %d", file, typ, ticks, total(want, i, nil))
					}
				}
			}

			listed, err := client.List(ctx, connect.NewRequest(&adhocprofilesv1.AdHocProfilesListRequest{}))
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if len(listed.Msg.Profiles) != len(files) {
				t.Fatalf("List: %d profiles, want %d", len(listed.Msg.Profiles), len(files))
			}
			for _, meta := range listed.Msg.Profiles {
				if ids[meta.Id] != meta.Name || meta.UploadedAt <= 0 {
					t.Fatalf("List: %+v not uploaded (%v)", meta, ids)
				}
			}

			_, err = client.Get(ctx, connect.NewRequest(&adhocprofilesv1.AdHocProfilesGetRequest{Id: "no-such-profile"}))
			if connect.CodeOf(err) != connect.CodeNotFound {
				t.Fatalf("Get of an unknown id: %v, want not_found", err)
			}
			other, err := adhocClient(serverURL(t), newTenant("adhoc-other"), opts...).List(ctx,
				connect.NewRequest(&adhocprofilesv1.AdHocProfilesListRequest{}))
			if err != nil || len(other.Msg.Profiles) != 0 {
				t.Fatalf("another tenant lists %v (%v)", other, err)
			}
		})
	}
}

// TestAdHocRefusals: an upload over adhoc.max_profile_bytes (256 KiB on the small server) and
// a file that is no profile are invalid_argument, which connect clients do not retry.
func TestAdHocRefusals(t *testing.T) {
	ctx := context.Background()
	small := os.Getenv("PYRITE_SMALL_BODY_URL")
	if small == "" {
		t.Fatal("PYRITE_SMALL_BODY_URL is not set: run these tests through `cargo test --test compat`")
	}
	client := adhocClient(small, newTenant("adhoc-refused"))
	raw, err := os.ReadFile(corpusPath(t, "gpprof_large.cpu"))
	if err != nil {
		t.Fatal(err)
	}
	// Several rounds: the oversized body is refused unread, so the server must tell the client
	// not to reuse that connection, or the next request on it fails with an unexpected EOF.
	for round := 0; round < 5; round++ {
		_, err = client.Upload(ctx, connect.NewRequest(&adhocprofilesv1.AdHocProfilesUploadRequest{
			Name:    "large.cpu",
			Profile: base64.StdEncoding.EncodeToString(raw),
		}))
		var connectErr *connect.Error
		if !errors.As(err, &connectErr) || connectErr.Code() != connect.CodeInvalidArgument ||
			!strings.Contains(connectErr.Message(), "adhoc.max_profile_bytes") {
			t.Fatalf("round %d: oversized upload: %v, want invalid_argument naming adhoc.max_profile_bytes", round, err)
		}
		_, err = client.Upload(ctx, connect.NewRequest(&adhocprofilesv1.AdHocProfilesUploadRequest{
			Name:    "notes.txt",
			Profile: base64.StdEncoding.EncodeToString([]byte("\x00 not a profile")),
		}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("round %d: garbage upload: %v, want invalid_argument", round, err)
		}
	}
	listed, err := client.List(ctx, connect.NewRequest(&adhocprofilesv1.AdHocProfilesListRequest{}))
	if err != nil || len(listed.Msg.Profiles) != 0 {
		t.Fatalf("refused uploads were stored: %v (%v)", listed, err)
	}
}

// TestStatusVersionCapabilities calls the official status, version and capabilities clients.
func TestStatusVersionCapabilities(t *testing.T) {
	ctx := context.Background()
	url := serverURL(t)
	flags, err := capabilitiesv1connect.NewFeatureFlagsServiceClient(http.DefaultClient, url).
		GetFeatureFlags(ctx, connect.NewRequest(&capabilitiesv1.GetFeatureFlagsRequest{}))
	if err != nil {
		t.Fatalf("GetFeatureFlags: %v", err)
	}
	seen := map[string]bool{}
	for _, flag := range flags.Msg.FeatureFlags {
		seen[flag.Name] = flag.Enabled
	}
	if enabled, ok := seen["functionProjections"]; !ok || enabled {
		t.Fatalf("feature flags %v: functionProjections must be listed and off", seen)
	}
	version, err := versionv1connect.NewVersionClient(http.DefaultClient, url).
		Version(ctx, connect.NewRequest(&versionv1.VersionRequest{}))
	if err != nil || version.Msg.QuerierAPI != 1 {
		t.Fatalf("Version: %v (%v)", version, err)
	}
	info, err := statusv1connect.NewStatusServiceClient(http.DefaultClient, url).
		GetBuildInfo(ctx, connect.NewRequest(&statusv1.GetBuildInfoRequest{}))
	if err != nil || info.Msg.Status != "success" || info.Msg.Data.GetVersion() == "" {
		t.Fatalf("GetBuildInfo: %v (%v)", info, err)
	}
	response, err := http.Get(url + "/api/v1/status/buildinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer response.Body.Close()
	var body struct {
		Status string `json:"status"`
		Data   struct {
			Version string `json:"version"`
		} `json:"data"`
	}
	if err := json.NewDecoder(response.Body).Decode(&body); err != nil || body.Status != "success" ||
		body.Data.Version != info.Msg.Data.GetVersion() {
		t.Fatalf("/api/v1/status/buildinfo: %+v (%v)", body, err)
	}
}
