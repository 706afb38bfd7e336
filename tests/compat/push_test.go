package compat

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/pprof/profile"

	pushv1 "github.com/grafana/pyroscope/api/gen/proto/go/push/v1"
	querierv1 "github.com/grafana/pyroscope/api/gen/proto/go/querier/v1"
	typesv1 "github.com/grafana/pyroscope/api/gen/proto/go/types/v1"
)

// flameTotal is the SelectMergeStacktraces total of one profile type and selector in
// [at − 1m, at + 1m].
func flameTotal(t *testing.T, tenant, profileType, selector string, at time.Time) int64 {
	t.Helper()
	resp, err := querier(t, tenant).SelectMergeStacktraces(context.Background(), connect.NewRequest(&querierv1.SelectMergeStacktracesRequest{
		ProfileTypeID: profileType, LabelSelector: selector, Start: ms(at.Add(-time.Minute)), End: ms(at.Add(time.Minute)),
	}))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Msg.Flamegraph == nil {
		return 0
	}
	decodeFlameGraph(t, resp.Msg.Flamegraph)
	return resp.Msg.Flamegraph.Total
}

// Many series × samples in one request, gzip-compressed request bodies, the JSON codec and
// annotations (accepted and ignored).
func TestPushShapes(t *testing.T) {
	ctx := context.Background()
	tenant := newTenant("shapes")
	cpuProfile := loadProfile(t, "gotarget__cpu_5s.pb.gz")
	heap := loadProfile(t, "gotarget__heap_t0.pb.gz")
	cpuTotal := total(cpuProfile, sampleIndex(t, cpuProfile, "cpu", "nanoseconds"), nil)
	inuse := total(heap, sampleIndex(t, heap, "inuse_space", "bytes"), nil)
	at := time.Now().Add(-3 * time.Minute).Truncate(time.Millisecond)

	// Two series, the first with three samples (one uncompressed, as pyroscope-rs sends).
	var plain bytes.Buffer
	c := cpuProfile.Copy()
	c.TimeNanos = at.Add(2 * time.Second).UnixNano()
	if err := c.WriteUncompressed(&plain); err != nil {
		t.Fatal(err)
	}
	req := &pushv1.PushRequest{Series: []*pushv1.RawProfileSeries{
		{
			Labels: alloyLabels("process_cpu", "many"),
			Samples: []*pushv1.RawSample{
				{RawProfile: stamped(t, cpuProfile, at), ID: "a"},
				{RawProfile: stamped(t, cpuProfile, at.Add(time.Second)), ID: "b"},
				{RawProfile: plain.Bytes(), ID: "c"},
			},
			Annotations: []*typesv1.ProfileAnnotation{{Key: "throttled", Value: `{"x":1}`}},
		},
		{
			Labels:  alloyLabels("memory", "many"),
			Samples: []*pushv1.RawSample{{RawProfile: stamped(t, heap, at)}},
		},
	}}
	if _, err := pusher(t, serverURL(t), tenant).Push(ctx, connect.NewRequest(req)); err != nil {
		t.Fatal(err)
	}
	if got := flameTotal(t, tenant, cpuType, `{service_name="many"}`, at); got != 3*cpuTotal {
		t.Fatalf("three CPU samples: total %d, want %d", got, 3*cpuTotal)
	}
	if got := flameTotal(t, tenant, "memory:inuse_space:bytes:space:bytes", `{service_name="many"}`, at); got != inuse {
		t.Fatalf("heap inuse_space %d, want %d", got, inuse)
	}

	// gzip request body (connect's Content-Encoding: gzip) and the JSON codec.
	for name, opts := range map[string][]connect.ClientOption{
		"gzip":      {connect.WithSendGzip()},
		"json":      {connect.WithProtoJSON()},
		"json+gzip": {connect.WithProtoJSON(), connect.WithSendGzip()},
	} {
		service := "codec-" + name
		one := &pushv1.PushRequest{Series: []*pushv1.RawProfileSeries{{
			Labels:  alloyLabels("process_cpu", service),
			Samples: []*pushv1.RawSample{{RawProfile: stamped(t, cpuProfile, at)}},
		}}}
		if _, err := pusher(t, serverURL(t), tenant, opts...).Push(ctx, connect.NewRequest(one)); err != nil {
			t.Fatalf("%s push: %v", name, err)
		}
		if got := flameTotal(t, tenant, cpuType, `{service_name="`+service+`"}`, at); got != cpuTotal {
			t.Fatalf("%s: total %d, want %d", name, got, cpuTotal)
		}
	}

	// No service_name: Pyroscope's distributor names it unknown_service.
	push(t, tenant, labels("__name__", "process_cpu", "__delta__", "false"), stamped(t, cpuProfile, at))
	if got := flameTotal(t, tenant, cpuType, `{service_name="unknown_service"}`, at); got != cpuTotal {
		t.Fatalf("unknown_service total %d, want %d", got, cpuTotal)
	}
}

// Malformed pushes get the code a Pyroscope client acts on (Alloy drops invalid_argument,
// retries resource_exhausted): only possible when the error body is connect JSON.
// A body over the limit never fits, so it is invalid_argument too.
func TestPushErrors(t *testing.T) {
	ctx := context.Background()
	tenant := newTenant("push-errors")
	client := pusher(t, serverURL(t), tenant)
	cpuProfile := loadProfile(t, "gotarget__cpu_5s.pb.gz")
	good := stamped(t, cpuProfile, time.Now())

	for name, req := range map[string]*pushv1.PushRequest{
		"empty request":          {},
		"series without samples": {Series: []*pushv1.RawProfileSeries{{Labels: alloyLabels("process_cpu", "x")}}},
		"empty raw profile":      {Series: []*pushv1.RawProfileSeries{{Labels: alloyLabels("process_cpu", "x"), Samples: []*pushv1.RawSample{{}}}}},
		"not a pprof":            {Series: []*pushv1.RawProfileSeries{{Labels: alloyLabels("process_cpu", "x"), Samples: []*pushv1.RawSample{{RawProfile: []byte("hello, world")}}}}},
		"bad metric name":        {Series: []*pushv1.RawProfileSeries{{Labels: labels("__name__", "a:b", "service_name", "x"), Samples: []*pushv1.RawSample{{RawProfile: good}}}}},
		"duplicate label":        {Series: []*pushv1.RawProfileSeries{{Labels: labels("service_name", "x", "service_name", "y"), Samples: []*pushv1.RawSample{{RawProfile: good}}}}},
	} {
		_, err := client.Push(ctx, connect.NewRequest(req))
		wantCode(t, err, connect.CodeInvalidArgument, name)
	}

	// Over the body limit (a server started with api.max_body_bytes = 1 MiB): invalid_argument
	// (not to be retried), raw and gzip-compressed alike.
	small := os.Getenv("PYRITE_SMALL_BODY_URL")
	if small == "" {
		t.Fatal("PYRITE_SMALL_BODY_URL is not set: run these tests through `cargo test --test compat`")
	}
	big := make([]byte, 2<<20)
	for i := range big {
		big[i] = byte(i * 7919 >> 3)
	}
	huge := &pushv1.PushRequest{Series: []*pushv1.RawProfileSeries{{
		Labels:  alloyLabels("process_cpu", "x"),
		Samples: []*pushv1.RawSample{{RawProfile: big}},
	}}}
	_, err := pusher(t, small, tenant).Push(ctx, connect.NewRequest(huge))
	wantCode(t, err, connect.CodeInvalidArgument, "push over the body limit")
	zeros := &pushv1.PushRequest{Series: []*pushv1.RawProfileSeries{{
		Labels:  alloyLabels("process_cpu", "x"),
		Samples: []*pushv1.RawSample{{RawProfile: make([]byte, 4<<20)}},
	}}}
	_, err = pusher(t, small, tenant, connect.WithSendGzip()).Push(ctx, connect.NewRequest(zeros))
	wantCode(t, err, connect.CodeInvalidArgument, "gzip push inflating over the body limit")
	// Under the limit the same server accepts.
	if _, err := pusher(t, small, tenant).Push(ctx, connect.NewRequest(&pushv1.PushRequest{Series: []*pushv1.RawProfileSeries{{
		Labels: alloyLabels("process_cpu", "x"), Samples: []*pushv1.RawSample{{RawProfile: good}},
	}}})); err != nil {
		t.Fatalf("small push to the small-limit server: %v", err)
	}
}

// A Go heap profile pushed without __delta__ is cumulative: the server stores alloc_* as the
// difference to the series' previous profile (the first one primes); inuse_* as is. With
// __delta__="false" (Alloy) or a godeltaprof_* name everything is stored as sent.
func TestMemoryDeltas(t *testing.T) {
	tenant := newTenant("delta")
	t0 := loadProfile(t, "gotarget__heap_t0.pb.gz")
	t1 := loadProfile(t, "gotarget__heap_t1.pb.gz")
	at0 := time.Now().Add(-4 * time.Minute).Truncate(time.Millisecond)
	at1 := at0.Add(15 * time.Second)
	sum := func(p *profile.Profile, typ, unit string) int64 { return total(p, sampleIndex(t, p, typ, unit), nil) }

	cumulative := labels("__name__", "memory", "service_name", "cumulative", "job", "j", "instance", "i")
	push(t, tenant, cumulative, stamped(t, t0, at0))
	push(t, tenant, cumulative, stamped(t, t1, at1))
	push(t, tenant, alloyLabels("memory", "alloy"), stamped(t, t0, at0))
	push(t, tenant, alloyLabels("memory", "alloy"), stamped(t, t1, at1))
	// Alloy's godeltaprof_memory target: already deltas, stored as `memory` (Pyroscope's
	// default relabel rule), never diffed even without __delta__.
	godelta := labels("__name__", "godeltaprof_memory", "service_name", "godelta")
	push(t, tenant, godelta, stamped(t, t0, at0))
	push(t, tenant, godelta, stamped(t, t1, at1))

	mid := at0.Add(7 * time.Second)
	for _, c := range []struct {
		service, typ string
		want         int64
	}{
		{"cumulative", "memory:alloc_space:bytes:space:bytes", sum(t1, "alloc_space", "bytes") - sum(t0, "alloc_space", "bytes")},
		{"cumulative", "memory:alloc_objects:count:space:bytes", sum(t1, "alloc_objects", "count") - sum(t0, "alloc_objects", "count")},
		{"cumulative", "memory:inuse_space:bytes:space:bytes", sum(t0, "inuse_space", "bytes") + sum(t1, "inuse_space", "bytes")},
		{"alloy", "memory:alloc_space:bytes:space:bytes", sum(t0, "alloc_space", "bytes") + sum(t1, "alloc_space", "bytes")},
		{"alloy", "memory:inuse_objects:count:space:bytes", sum(t0, "inuse_objects", "count") + sum(t1, "inuse_objects", "count")},
		{"godelta", "memory:alloc_space:bytes:space:bytes", sum(t0, "alloc_space", "bytes") + sum(t1, "alloc_space", "bytes")},
	} {
		if got := flameTotal(t, tenant, c.typ, `{service_name="`+c.service+`"}`, mid); got != c.want {
			t.Fatalf("%s %s: total %d, want %d", c.service, c.typ, got, c.want)
		}
	}
	if d := sum(t1, "alloc_space", "bytes") - sum(t0, "alloc_space", "bytes"); d <= 0 {
		t.Fatalf("corpus heap t1 − t0 alloc_space = %d: not cumulative?", d)
	}
}

const spanID = "1f2e3d4c5b6a7988"

// SelectMergeSpanProfile (Grafana's traces → profiles): the samples labelled with the span.
func TestSelectMergeSpanProfile(t *testing.T) {
	ctx := context.Background()
	tenant := newTenant("span")
	p := loadProfile(t, "pyroscope__pprof_single_group_with_optional_span_id.pb.gz")
	cpu := sampleIndex(t, p, "cpu", "nanoseconds")
	// The corpus file's span_id values ("239") are not 16-hex span ids; make them real ones.
	// Half keep `span_id`, half use OpenTelemetry's `pprof.span_id`.
	withSpan := 0
	for _, s := range p.Sample {
		if _, ok := s.Label["span_id"]; ok {
			withSpan++
			delete(s.Label, "span_id")
			if withSpan%2 == 0 {
				s.Label["pprof.span_id"] = []string{spanID}
			} else {
				s.Label["span_id"] = []string{spanID}
			}
		}
	}
	if withSpan == 0 || withSpan == len(p.Sample) {
		t.Fatalf("want a profile where some samples have a span id: %d of %d", withSpan, len(p.Sample))
	}
	hasSpan := func(s *profile.Sample) bool {
		return len(s.Label["span_id"]) > 0 || len(s.Label["pprof.span_id"]) > 0
	}
	want := total(p, cpu, hasSpan)
	at := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	push(t, tenant, alloyLabels("process_cpu", "spans"), stamped(t, p, at))

	q := querier(t, tenant)
	span := func(spans ...string) (*querierv1.SelectMergeSpanProfileResponse, error) {
		resp, err := q.SelectMergeSpanProfile(ctx, connect.NewRequest(&querierv1.SelectMergeSpanProfileRequest{
			ProfileTypeID: cpuType, LabelSelector: `{service_name="spans"}`, SpanSelector: spans,
			Start: ms(at.Add(-time.Minute)), End: ms(at.Add(time.Minute)),
		}))
		if err != nil {
			return nil, err
		}
		return resp.Msg, nil
	}
	resp, err := span(spanID)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Flamegraph.Total != want {
		t.Fatalf("span total %d, want %d (of %d in the profile)", resp.Flamegraph.Total, want, total(p, cpu, nil))
	}
	nodes := decodeFlameGraph(t, resp.Flamegraph)
	assertSameMap(t, "span self per function", flameSelfByName(nodes), selfByName(p, cpu, hasSpan))

	resp, err = span("ffffffffffffffff")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Flamegraph != nil && resp.Flamegraph.Total != 0 {
		t.Fatalf("unknown span: total %d", resp.Flamegraph.Total)
	}
	_, err = span("239")
	wantCode(t, err, connect.CodeInvalidArgument, "span id of the wrong length")
	_, err = span("zzzzzzzzzzzzzzzz")
	wantCode(t, err, connect.CodeInvalidArgument, "span id not hex")

	// The whole profile is still there for the plain flame graph.
	if got := flameTotal(t, tenant, cpuType, `{service_name="spans"}`, at); got != total(p, cpu, nil) {
		t.Fatalf("flame graph total %d, want %d", got, total(p, cpu, nil))
	}
}
