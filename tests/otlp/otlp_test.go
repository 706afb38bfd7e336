// Package otlp exports real corpus profiles to Pyrite with the OpenTelemetry Collector's own
// OTLP profiles client (go.opentelemetry.io/collector/pdata/pprofile/pprofileotlp: its gRPC
// client, and its request's MarshalProto/MarshalJSON for OTLP/HTTP) and checks what Pyrite
// stored through Pyroscope's official querier client, against totals computed independently
// from the pprof files by github.com/google/pprof/profile.
//
// The servers are started by the Rust test tests/otlp.rs (PYRITE_URL, its otlp.grpc_listen_address
// in PYRITE_OTLP_GRPC_URL, and PYRITE_SMALL_BODY_URL
// with a 1 MiB api.max_body_bytes).
package otlp

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/pprof/profile"
	querierv1 "github.com/grafana/pyroscope/api/gen/proto/go/querier/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/querier/v1/querierv1connect"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pprofile"
	"go.opentelemetry.io/collector/pdata/pprofile/pprofileotlp"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcgzip "google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

const httpPath = "/v1development/profiles"

func env(t *testing.T, name string) string {
	t.Helper()
	value := os.Getenv(name)
	if value == "" {
		t.Fatalf("%s is not set: run these tests through `cargo test --test otlp`", name)
	}
	return strings.TrimRight(value, "/")
}

// corpusFiles lists the MANIFEST's files that google/pprof does not reject.
func corpusFiles(t *testing.T) (string, []string) {
	t.Helper()
	dir := os.Getenv("PYRITE_CORPUS_DIR")
	if dir == "" {
		dir = "../../../shared/corpus"
	}
	manifest, err := os.Open(filepath.Join(dir, "MANIFEST.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer manifest.Close()
	var files []string
	scanner := bufio.NewScanner(manifest)
	for scanner.Scan() {
		fields := strings.Split(scanner.Text(), "\t")
		if len(fields) < 9 || fields[0] == "file" || fields[7] == "REJECTED" {
			continue
		}
		files = append(files, fields[0])
	}
	if len(files) < 40 {
		t.Fatalf("only %d valid corpus files in the MANIFEST", len(files))
	}
	return dir, files
}

func loadProfile(t *testing.T, dir, name string) *profile.Profile {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "files", name))
	if err != nil {
		t.Fatal(err)
	}
	p, err := profile.ParseData(data)
	if err != nil {
		t.Fatalf("parse %s: %v", name, err)
	}
	return p
}

// toOTLP builds the OTLP profiles of p: one Profile per sample type (the v1development schema
// has one sample type per profile) over one shared dictionary, whose tables start with their
// zero entry as the format asks. Every profile is stamped `at`.
func toOTLP(p *profile.Profile, service string, at time.Time) pprofile.Profiles {
	out := pprofile.NewProfiles()
	dict := out.Dictionary()
	dict.StringTable().Append("")
	dict.MappingTable().AppendEmpty()
	dict.LocationTable().AppendEmpty()
	dict.FunctionTable().AppendEmpty()
	dict.StackTable().AppendEmpty()
	dict.AttributeTable().AppendEmpty()
	dict.LinkTable().AppendEmpty()
	strs := map[string]int32{"": 0}
	str := func(s string) int32 {
		if i, ok := strs[s]; ok {
			return i
		}
		i := int32(dict.StringTable().Len())
		dict.StringTable().Append(s)
		strs[s] = i
		return i
	}
	mappings := map[*profile.Mapping]int32{}
	for _, m := range p.Mapping {
		om := dict.MappingTable().AppendEmpty()
		om.SetMemoryStart(m.Start)
		om.SetMemoryLimit(m.Limit)
		om.SetFileOffset(m.Offset)
		om.SetFilenameStrindex(str(m.File))
		mappings[m] = int32(dict.MappingTable().Len() - 1)
	}
	functions := map[*profile.Function]int32{}
	for _, f := range p.Function {
		of := dict.FunctionTable().AppendEmpty()
		of.SetNameStrindex(str(f.Name))
		of.SetSystemNameStrindex(str(f.SystemName))
		of.SetFilenameStrindex(str(f.Filename))
		of.SetStartLine(f.StartLine)
		functions[f] = int32(dict.FunctionTable().Len() - 1)
	}
	locations := map[*profile.Location]int32{}
	for _, l := range p.Location {
		ol := dict.LocationTable().AppendEmpty()
		if l.Mapping != nil {
			ol.SetMappingIndex(mappings[l.Mapping])
		}
		ol.SetAddress(l.Address)
		for _, line := range l.Line {
			oline := ol.Lines().AppendEmpty()
			oline.SetFunctionIndex(functions[line.Function])
			oline.SetLine(line.Line)
		}
		locations[l] = int32(dict.LocationTable().Len() - 1)
	}
	stacks := map[string]int32{}
	attributes := map[string]int32{}

	rp := out.ResourceProfiles().AppendEmpty()
	rp.Resource().Attributes().PutStr("service.name", service)
	rp.Resource().Attributes().PutStr("deployment.environment", "otlp-test")
	rp.Resource().Attributes().PutStr("host-name", "ci")
	rp.Resource().Attributes().PutInt("process.pid", 4242)
	sp := rp.ScopeProfiles().AppendEmpty()
	sp.Scope().SetName("pyrite-otlp-test")
	sp.Scope().Attributes().PutStr("otlp.scope.attr", "scoped")
	for i, st := range p.SampleType {
		op := sp.Profiles().AppendEmpty()
		op.SampleType().SetTypeStrindex(str(st.Type))
		op.SampleType().SetUnitStrindex(str(st.Unit))
		if p.PeriodType != nil {
			op.PeriodType().SetTypeStrindex(str(p.PeriodType.Type))
			op.PeriodType().SetUnitStrindex(str(p.PeriodType.Unit))
		}
		op.SetPeriod(p.Period)
		op.SetTime(pcommon.NewTimestampFromTime(at))
		op.SetDurationNano(uint64(10 * time.Second))
		for _, s := range p.Sample {
			key := fmt.Sprint(s.Location)
			index, ok := stacks[key]
			if !ok {
				stack := dict.StackTable().AppendEmpty()
				for _, l := range s.Location {
					stack.LocationIndices().Append(locations[l])
				}
				index = int32(dict.StackTable().Len() - 1)
				stacks[key] = index
			}
			os := op.Samples().AppendEmpty()
			os.SetStackIndex(index)
			os.Values().Append(s.Value[i])
			for k, values := range s.Label {
				attr := k + "=" + values[0]
				ai, ok := attributes[attr]
				if !ok {
					kv := dict.AttributeTable().AppendEmpty()
					kv.SetKeyStrindex(str(k))
					kv.Value().SetStr(values[0])
					ai = int32(dict.AttributeTable().Len() - 1)
					attributes[attr] = ai
				}
				os.AttributeIndices().Append(ai)
			}
		}
	}
	return out
}

// expected computes, with google/pprof's parsed profile, the total Pyrite must hold per stored
// profile type, keyed name:type:unit:period_type:period_unit, by Pyroscope's OTLP rules:
// samples/count with a cpu/nanoseconds period becomes process_cpu's cpu/nanoseconds (count ×
// period); other types are named after their period type, which is kept only with a non-zero
// period. Without one the name is Pyrite's push-path rule, left as "?" (matched on the rest).
func expected(p *profile.Profile) map[string]int64 {
	totals := map[string]int64{}
	periodType, periodUnit := "", ""
	if p.PeriodType != nil && p.Period != 0 {
		periodType, periodUnit = p.PeriodType.Type, p.PeriodType.Unit
	}
	for i, st := range p.SampleType {
		var sum int64
		for _, s := range p.Sample {
			sum += s.Value[i]
		}
		name, typ, unit := periodType, st.Type, st.Unit
		if typ == "samples" && unit == "count" && periodType == "cpu" && periodUnit == "nanoseconds" {
			name, typ, unit, sum = "process_cpu", "cpu", "nanoseconds", sum*p.Period
		}
		if name == "" {
			name = "?"
		}
		totals[fmt.Sprintf("%s:%s:%s:%s:%s", name, typ, unit, periodType, periodUnit)] += sum
	}
	return totals
}

func grpcExport(t *testing.T, base, tenant string, req pprofileotlp.ExportRequest) (pprofileotlp.ExportResponse, error) {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(u.Host, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "x-scope-orgid", tenant)
	// gzip: what the collector's otlp exporter sends by default.
	return pprofileotlp.NewGRPCClient(conn).Export(ctx, req, grpc.UseCompressor(grpcgzip.Name))
}

// httpExport posts req as OTLP/HTTP (protobuf gzipped, or JSON); returns status, content type, body.
func httpExport(t *testing.T, base, tenant string, req pprofileotlp.ExportRequest, asJSON bool) (int, string, []byte) {
	t.Helper()
	var body []byte
	var err error
	contentType := "application/x-protobuf"
	if asJSON {
		contentType = "application/json"
		body, err = req.MarshalJSON()
	} else {
		body, err = req.MarshalProto()
	}
	if err != nil {
		t.Fatal(err)
	}
	return post(t, base, tenant, contentType, body, !asJSON)
}

func post(t *testing.T, base, tenant, contentType string, body []byte, gzipped bool) (int, string, []byte) {
	t.Helper()
	if gzipped {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		w.Write(body)
		w.Close()
		body = buf.Bytes()
	}
	r, err := http.NewRequest(http.MethodPost, base+httpPath, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", contentType)
	r.Header.Set("X-Scope-OrgID", tenant)
	if gzipped {
		r.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), data
}

func querier(base, tenant string) querierv1connect.QuerierServiceClient {
	return querierv1connect.NewQuerierServiceClient(http.DefaultClient, base, connect.WithInterceptors(
		connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
				req.Header().Set("X-Scope-OrgID", tenant)
				return next(ctx, req)
			}
		})))
}

// seriesOf returns the label sets of service's series, keyed by __profile_type__.
func seriesOf(t *testing.T, q querierv1connect.QuerierServiceClient, service string) map[string]map[string]string {
	t.Helper()
	now := time.Now()
	resp, err := q.Series(context.Background(), connect.NewRequest(&querierv1.SeriesRequest{
		Matchers: []string{fmt.Sprintf(`{service_name=%q}`, service)},
		Start:    now.Add(-time.Hour).UnixMilli(),
		End:      now.Add(time.Hour).UnixMilli(),
	}))
	if err != nil {
		t.Fatalf("Series %s: %v", service, err)
	}
	out := map[string]map[string]string{}
	for _, set := range resp.Msg.LabelsSet {
		labels := map[string]string{}
		for _, pair := range set.Labels {
			labels[pair.Name] = pair.Value
		}
		out[labels["__profile_type__"]] = labels
	}
	return out
}

func total(t *testing.T, q querierv1connect.QuerierServiceClient, service, profileType string) int64 {
	t.Helper()
	now := time.Now()
	resp, err := q.SelectMergeStacktraces(context.Background(), connect.NewRequest(&querierv1.SelectMergeStacktracesRequest{
		ProfileTypeID: profileType,
		LabelSelector: fmt.Sprintf(`{service_name=%q}`, service),
		Start:         now.Add(-time.Hour).UnixMilli(),
		End:           now.Add(time.Hour).UnixMilli(),
	}))
	if err != nil {
		t.Fatalf("SelectMergeStacktraces %s %s: %v", service, profileType, err)
	}
	return resp.Msg.Flamegraph.GetTotal()
}

// TestCorpusTotals exports every valid corpus file, each over one of the three transports in
// turn, and checks each stored sample type's flame graph total and labels.
func TestCorpusTotals(t *testing.T) {
	base := env(t, "PYRITE_URL")
	dir, files := corpusFiles(t)
	const tenant = "otlp-main"
	at := time.Now().Add(-time.Minute)
	transports := []string{"grpc", "http-proto", "http-json"}
	for i, name := range files {
		p := loadProfile(t, dir, name)
		req := pprofileotlp.NewExportRequestFromProfiles(toOTLP(p, "otlp-"+name, at))
		// The replay check of tests/otlp.rs reads this file's CPU profile: over gRPC.
		transport := transports[i%3]
		if name == "gotarget__cpu_5s.pb.gz" {
			transport = "grpc"
		}
		switch transport {
		case "grpc":
			resp, err := grpcExport(t, base, tenant, req)
			if err != nil {
				t.Fatalf("%s: gRPC export: %v", name, err)
			}
			if n := resp.PartialSuccess().RejectedProfiles(); n != 0 {
				t.Fatalf("%s: %d profiles rejected: %s", name, n, resp.PartialSuccess().ErrorMessage())
			}
		default:
			asJSON := transport == "http-json"
			code, contentType, body := httpExport(t, base, tenant, req, asJSON)
			if code != http.StatusOK {
				t.Fatalf("%s: OTLP/HTTP (%s) export: %d %s", name, transport, code, body)
			}
			resp := pprofileotlp.NewExportResponse()
			if asJSON {
				if contentType != "application/json" {
					t.Fatalf("%s: response content type %q", name, contentType)
				}
				if err := resp.UnmarshalJSON(body); err != nil {
					t.Fatalf("%s: response: %v (%s)", name, err, body)
				}
			} else if err := resp.UnmarshalProto(body); err != nil {
				t.Fatalf("%s: response: %v", name, err)
			}
			if n := resp.PartialSuccess().RejectedProfiles(); n != 0 {
				t.Fatalf("%s: %d profiles rejected: %s", name, n, resp.PartialSuccess().ErrorMessage())
			}
		}
	}
	t.Logf("exported %d corpus files", len(files))

	q := querier(base, tenant)
	checked := 0
	for _, name := range files {
		p := loadProfile(t, dir, name)
		service := "otlp-" + name
		series := seriesOf(t, q, service)
		for key, want := range expected(p) {
			var found []string
			for profileType := range series {
				if profileType == key || (strings.HasPrefix(key, "?:") && strings.SplitN(profileType, ":", 2)[1] == key[2:]) {
					found = append(found, profileType)
				}
			}
			if want == 0 && len(found) == 0 {
				continue // All-zero values: nothing to store.
			}
			if len(found) != 1 {
				t.Errorf("%s: %d series for %s among %v", name, len(found), key, keys(series))
				continue
			}
			profileType := found[0]
			if got := total(t, q, service, profileType); got != want {
				t.Errorf("%s %s: flame graph total %d, pprof total %d", name, profileType, got, want)
			}
			labels := series[profileType]
			for label, value := range map[string]string{
				"service_name":           service,
				"service.name":           service,
				"deployment.environment": "otlp-test",
				"host_name":              "ci",
				"otlp.scope.attr":        "scoped",
			} {
				if labels[label] != value {
					t.Errorf("%s %s: label %s=%q, want %q (labels %v)", name, profileType, label, labels[label], value, labels)
				}
			}
			if _, ok := labels["process.pid"]; ok {
				t.Errorf("%s: an int attribute became a label: %v", name, labels)
			}
			checked++
		}
	}
	if checked < len(files) {
		t.Fatalf("only %d sample types checked for %d files", checked, len(files))
	}
	t.Logf("checked %d stored sample types", checked)
}

func keys(m map[string]map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestTenantsAreSeparate exports one profile to one tenant, then to another.
func TestTenantsAreSeparate(t *testing.T) {
	base := env(t, "PYRITE_URL")
	dir, _ := corpusFiles(t)
	p := loadProfile(t, dir, "gotarget__cpu_5s.pb.gz")
	want := expected(p)["process_cpu:cpu:nanoseconds:cpu:nanoseconds"]
	const cpu = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
	service := "otlp-tenants"
	req := pprofileotlp.NewExportRequestFromProfiles(toOTLP(p, service, time.Now().Add(-time.Minute)))
	// Tenant a over the separate otlp.grpc_listen_address listener.
	if _, err := grpcExport(t, env(t, "PYRITE_OTLP_GRPC_URL"), "otlp-tenant-a", req); err != nil {
		t.Fatal(err)
	}
	if got := total(t, querier(base, "otlp-tenant-a"), service, cpu); got != want {
		t.Fatalf("tenant a: %d, want %d", got, want)
	}
	if got := total(t, querier(base, "otlp-tenant-b"), service, cpu); got != 0 {
		t.Fatalf("tenant b sees tenant a's profile: %d", got)
	}
	if code, _, body := httpExport(t, base, "otlp-tenant-b", req, false); code != http.StatusOK {
		t.Fatalf("tenant b: %d %s", code, body)
	}
	for _, tenant := range []string{"otlp-tenant-a", "otlp-tenant-b"} {
		if got := total(t, querier(base, tenant), service, cpu); got != want {
			t.Fatalf("%s: %d, want %d", tenant, got, want)
		}
	}
}

// TestErrors: malformed and oversized exports get the documented errors.
func TestErrors(t *testing.T) {
	base := env(t, "PYRITE_URL")
	small := env(t, "PYRITE_SMALL_BODY_URL")
	dir, _ := corpusFiles(t)
	p := loadProfile(t, dir, "gotarget__cpu_5s.pb.gz")

	// A sample whose stack index is past the stack table.
	bad := toOTLP(p, "otlp-bad", time.Now())
	bad.ResourceProfiles().At(0).ScopeProfiles().At(0).Profiles().At(0).Samples().At(0).SetStackIndex(1 << 20)
	badReq := pprofileotlp.NewExportRequestFromProfiles(bad)
	_, err := grpcExport(t, base, "otlp-errors", badReq)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "out of range") {
		t.Fatalf("gRPC out-of-range stack index: %v", err)
	}
	code, contentType, body := httpExport(t, base, "otlp-errors", badReq, false)
	st := &rpcstatus.Status{}
	if code != http.StatusBadRequest || contentType != "application/x-protobuf" || proto.Unmarshal(body, st) != nil ||
		st.Code != int32(codes.InvalidArgument) || !strings.Contains(st.Message, "stack index") {
		t.Fatalf("OTLP/HTTP out-of-range stack index: %d %q %v", code, contentType, st)
	}
	code, contentType, body = httpExport(t, base, "otlp-errors", badReq, true)
	if code != http.StatusBadRequest || contentType != "application/json" ||
		!strings.Contains(string(body), `"code":3`) || !strings.Contains(string(body), "stack index") {
		t.Fatalf("OTLP/HTTP JSON out-of-range stack index: %d %q %s", code, contentType, body)
	}
	// Not protobuf at all.
	code, _, body = post(t, base, "otlp-errors", "application/x-protobuf", []byte("\xff\xff\xff not protobuf"), false)
	if code != http.StatusBadRequest || proto.Unmarshal(body, st) != nil || st.Code != int32(codes.InvalidArgument) {
		t.Fatalf("garbage protobuf: %d %v", code, st)
	}
	code, _, body = post(t, base, "otlp-errors", "application/json", []byte(`{"resourceProfiles": [`), false)
	if code != http.StatusBadRequest || !strings.Contains(string(body), `"code":3`) {
		t.Fatalf("truncated JSON: %d %s", code, body)
	}
	// Nothing of the refused exports was stored.
	if got := seriesOf(t, querier(base, "otlp-errors"), "otlp-bad"); len(got) != 0 {
		t.Fatalf("a refused export stored series: %v", got)
	}

	// Over the 1 MiB body limit: a large profile (~1.2 MB of pprof, more as OTLP).
	large := loadProfile(t, dir, "gpprof_large.cpu")
	bigReq := pprofileotlp.NewExportRequestFromProfiles(toOTLP(large, "otlp-big", time.Now()))
	_, err = grpcExport(t, small, "otlp-errors", bigReq)
	if c := status.Code(err); c != codes.InvalidArgument && c != codes.ResourceExhausted {
		t.Fatalf("gRPC oversized export: %v", err)
	}
	if st, _ := status.FromError(err); st != nil {
		// Never RetryInfo: the collector retries ResourceExhausted only with one.
		for _, detail := range st.Details() {
			t.Fatalf("oversized export carries retry details: %v", detail)
		}
	}
	code, _, body = httpExport(t, small, "otlp-errors", bigReq, false)
	if code != http.StatusBadRequest || proto.Unmarshal(body, st) != nil || st.Code != int32(codes.InvalidArgument) ||
		!strings.Contains(st.Message, "max_body_bytes") {
		t.Fatalf("OTLP/HTTP oversized export: %d %v", code, st)
	}
	code, _, _ = post(t, base, "otlp-errors", "text/plain", []byte("x"), false)
	if code != http.StatusUnsupportedMediaType {
		t.Fatalf("text/plain: %d", code)
	}
}
