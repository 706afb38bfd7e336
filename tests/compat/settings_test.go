package compat

import (
	"context"
	"net/http"
	"testing"

	"connectrpc.com/connect"

	settingsv1 "github.com/grafana/pyroscope/api/gen/proto/go/settings/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/settings/v1/settingsv1connect"
)

func settingsClient(t *testing.T, tenant string, opts ...connect.ClientOption) settingsv1connect.SettingsServiceClient {
	opts = append(opts, connect.WithInterceptors(tenantInterceptor(tenant)))
	return settingsv1connect.NewSettingsServiceClient(http.DefaultClient, serverURL(t), opts...)
}

// TestSettings drives settings.v1 with the official client in both codecs the Profiles
// Drilldown app and Pyroscope's own clients use: set, read back, a stale write refused, delete,
// and tenants kept apart.
func TestSettings(t *testing.T) {
	ctx := context.Background()
	for name, opts := range map[string][]connect.ClientOption{
		"proto": nil,
		"json":  {connect.WithProtoJSON()},
	} {
		t.Run(name, func(t *testing.T) {
			tenant, other := newTenant("settings"), newTenant("settings-other")
			client := settingsClient(t, tenant, opts...)

			set, err := client.Set(ctx, connect.NewRequest(&settingsv1.SetSettingsRequest{
				Setting: &settingsv1.Setting{Name: "pyroscope.flamegraph.max-nodes", Value: "16384"},
			}))
			if err != nil {
				t.Fatalf("Set: %v", err)
			}
			stamped := set.Msg.Setting.ModifiedAt
			if stamped <= 0 {
				t.Fatalf("Set did not stamp modifiedAt: %+v", set.Msg.Setting)
			}
			if _, err := client.Set(ctx, connect.NewRequest(&settingsv1.SetSettingsRequest{
				Setting: &settingsv1.Setting{Name: "theme", Value: "dark", ModifiedAt: 1000},
			})); err != nil {
				t.Fatalf("Set theme: %v", err)
			}

			got, err := client.Get(ctx, connect.NewRequest(&settingsv1.GetSettingsRequest{}))
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if len(got.Msg.Settings) != 2 ||
				got.Msg.Settings[0].Name != "pyroscope.flamegraph.max-nodes" || got.Msg.Settings[0].Value != "16384" ||
				got.Msg.Settings[0].ModifiedAt != stamped ||
				got.Msg.Settings[1].Name != "theme" || got.Msg.Settings[1].ModifiedAt != 1000 {
				t.Fatalf("Get: %+v", got.Msg.Settings)
			}

			// A write older than the stored change loses.
			_, err = client.Set(ctx, connect.NewRequest(&settingsv1.SetSettingsRequest{
				Setting: &settingsv1.Setting{Name: "theme", Value: "light", ModifiedAt: 999},
			}))
			wantCode(t, err, connect.CodeAborted, "stale Set")
			_, err = client.Set(ctx, connect.NewRequest(&settingsv1.SetSettingsRequest{
				Setting: &settingsv1.Setting{Name: "../escape", Value: "x"},
			}))
			wantCode(t, err, connect.CodeInvalidArgument, "Set with a path in its name")

			others, err := settingsClient(t, other, opts...).Get(ctx, connect.NewRequest(&settingsv1.GetSettingsRequest{}))
			if err != nil || len(others.Msg.Settings) != 0 {
				t.Fatalf("another tenant sees %+v (%v)", others, err)
			}

			if _, err := client.Delete(ctx, connect.NewRequest(&settingsv1.DeleteSettingsRequest{Name: "theme"})); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			got, err = client.Get(ctx, connect.NewRequest(&settingsv1.GetSettingsRequest{}))
			if err != nil || len(got.Msg.Settings) != 1 || got.Msg.Settings[0].Name != "pyroscope.flamegraph.max-nodes" {
				t.Fatalf("Get after Delete: %+v (%v)", got, err)
			}
		})
	}
}
