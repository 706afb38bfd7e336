package compat

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/pprof/profile"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	querierv1 "github.com/grafana/pyroscope/api/gen/proto/go/querier/v1"
	typesv1 "github.com/grafana/pyroscope/api/gen/proto/go/types/v1"
)

// One Go CPU profile pushed as Alloy does, then every querier RPC Grafana's data source and
// the Pyroscope UI call, checked against the pprof file itself.
func TestCPUProfileThroughEveryQuerierRPC(t *testing.T) {
	ctx := context.Background()
	tenant := newTenant("cpu")
	p := loadProfile(t, "gotarget__cpu_5s.pb.gz")
	cpu := sampleIndex(t, p, "cpu", "nanoseconds")
	want := total(p, cpu, nil)
	if want == 0 {
		t.Fatal("corpus CPU profile is empty")
	}
	at := time.Now().Add(-2 * time.Minute).Truncate(time.Millisecond)
	push(t, tenant, alloyLabels("process_cpu", "gotarget"), stamped(t, p, at))

	q := querier(t, tenant)
	start, end := ms(at.Add(-time.Minute)), ms(at.Add(time.Minute))
	selector := `{service_name="gotarget"}`

	t.Run("ProfileTypes", func(t *testing.T) {
		resp, err := q.ProfileTypes(ctx, connect.NewRequest(&querierv1.ProfileTypesRequest{Start: start, End: end}))
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, pt := range resp.Msg.ProfileTypes {
			ids = append(ids, pt.ID)
			if pt.ID == cpuType && (pt.Name != "process_cpu" || pt.SampleType != "cpu" || pt.SampleUnit != "nanoseconds" ||
				pt.PeriodType != "cpu" || pt.PeriodUnit != "nanoseconds") {
				t.Fatalf("profile type parts: %+v", pt)
			}
		}
		if !slices.Equal(ids, []string{cpuType, samplesTyp}) {
			t.Fatalf("profile types %v", ids)
		}
	})

	t.Run("AnalyzeQuery", func(t *testing.T) {
		// The profile is in the head: one series of the CPU type, one row per sample with CPU time.
		rows := uint64(0)
		for _, s := range p.Sample {
			if s.Value[cpu] != 0 {
				rows++
			}
		}
		resp, err := q.AnalyzeQuery(ctx, connect.NewRequest(&querierv1.AnalyzeQueryRequest{
			Start: start, End: end, Query: cpuType + selector,
		}))
		if err != nil {
			t.Fatal(err)
		}
		impact := resp.Msg.QueryImpact
		if impact == nil || impact.TotalQueriedSeries != 1 || len(resp.Msg.QueryScopes) != 2 {
			t.Fatalf("AnalyzeQuery: %+v", resp.Msg)
		}
		head := resp.Msg.QueryScopes[0]
		if head.SeriesCount != 1 || head.SampleCount != rows || resp.Msg.QueryScopes[1].BlockCount != 0 {
			t.Fatalf("AnalyzeQuery scopes: %+v, want %d rows in the head", resp.Msg.QueryScopes, rows)
		}
		// Without a profile type, both of the profile's types match.
		resp, err = q.AnalyzeQuery(ctx, connect.NewRequest(&querierv1.AnalyzeQueryRequest{Start: start, End: end, Query: selector}))
		if err != nil || resp.Msg.QueryImpact.TotalQueriedSeries != 2 {
			t.Fatalf("AnalyzeQuery of a selector: %+v (%v)", resp, err)
		}
	})

	t.Run("LabelNamesAndValues", func(t *testing.T) {
		names, err := q.LabelNames(ctx, connect.NewRequest(&typesv1.LabelNamesRequest{Matchers: []string{selector}, Start: start, End: end}))
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"service_name", "job", "instance", "__name__", "__profile_type__"} {
			if !slices.Contains(names.Msg.Names, name) {
				t.Fatalf("label names %v lack %s", names.Msg.Names, name)
			}
		}
		if slices.Contains(names.Msg.Names, "__delta__") {
			t.Fatalf("__delta__ is stored: %v", names.Msg.Names)
		}
		values, err := q.LabelValues(ctx, connect.NewRequest(&typesv1.LabelValuesRequest{Name: "service_name", Matchers: []string{"{}"}, Start: start, End: end}))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(values.Msg.Names, []string{"gotarget"}) {
			t.Fatalf("service_name values %v", values.Msg.Names)
		}
	})

	t.Run("Series", func(t *testing.T) {
		resp, err := q.Series(ctx, connect.NewRequest(&querierv1.SeriesRequest{
			Matchers: []string{selector}, LabelNames: []string{"__profile_type__", "service_name"}, Start: start, End: end,
		}))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, set := range resp.Msg.LabelsSet {
			if len(set.Labels) != 2 {
				t.Fatalf("series labels not projected: %v", set.Labels)
			}
			for _, l := range set.Labels {
				if l.Name == "__profile_type__" {
					got = append(got, l.Value)
				}
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, []string{cpuType, samplesTyp}) {
			t.Fatalf("series %v", got)
		}
	})

	var full []flameNode
	t.Run("SelectMergeStacktraces", func(t *testing.T) {
		resp, err := q.SelectMergeStacktraces(ctx, connect.NewRequest(&querierv1.SelectMergeStacktracesRequest{
			ProfileTypeID: cpuType, LabelSelector: selector, Start: start, End: end, MaxNodes: ptr(int64(1 << 16)),
		}))
		if err != nil {
			t.Fatal(err)
		}
		fg := resp.Msg.Flamegraph
		if fg.Total != want {
			t.Fatalf("flame graph total %d, pprof says %d", fg.Total, want)
		}
		full = decodeFlameGraph(t, fg)
		assertSameMap(t, "self per function", flameSelfByName(full), selfByName(p, cpu, nil))

		// Outside the window: nothing (an empty graph, still well formed).
		resp, err = q.SelectMergeStacktraces(ctx, connect.NewRequest(&querierv1.SelectMergeStacktracesRequest{
			ProfileTypeID: cpuType, LabelSelector: selector, Start: start - 3_600_000, End: start - 1,
		}))
		if err != nil {
			t.Fatal(err)
		}
		if fg := resp.Msg.Flamegraph; fg != nil && fg.Total != 0 {
			t.Fatalf("window before the push has total %d", fg.Total)
		}
		// A selector that matches nothing.
		resp, err = q.SelectMergeStacktraces(ctx, connect.NewRequest(&querierv1.SelectMergeStacktracesRequest{
			ProfileTypeID: cpuType, LabelSelector: `{service_name="other"}`, Start: start, End: end,
		}))
		if err != nil {
			t.Fatal(err)
		}
		if fg := resp.Msg.Flamegraph; fg != nil && fg.Total != 0 {
			t.Fatalf("unmatched selector has total %d", fg.Total)
		}
	})

	t.Run("MaxNodes", func(t *testing.T) {
		resp, err := q.SelectMergeStacktraces(ctx, connect.NewRequest(&querierv1.SelectMergeStacktracesRequest{
			ProfileTypeID: cpuType, LabelSelector: selector, Start: start, End: end, MaxNodes: ptr(int64(8)),
		}))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Msg.Flamegraph.Total != want {
			t.Fatalf("truncated total %d, want %d", resp.Msg.Flamegraph.Total, want)
		}
		nodes := decodeFlameGraph(t, resp.Msg.Flamegraph)
		if len(nodes) >= len(full) {
			t.Fatalf("max_nodes=8 kept %d of %d nodes", len(nodes), len(full))
		}
	})

	t.Run("StackTraceSelector", func(t *testing.T) {
		// The heaviest root-level call site, and what pprof says lies under it.
		perRoot := map[string]int64{}
		for _, s := range p.Sample {
			if stack := stackRootFirst(s); len(stack) > 0 {
				perRoot[stack[0]] += s.Value[cpu]
			}
		}
		var root string
		for name, v := range perRoot {
			if root == "" || v > perRoot[root] || (v == perRoot[root] && name < root) {
				root = name
			}
		}
		keep := func(s *profile.Sample) bool {
			stack := stackRootFirst(s)
			return len(stack) > 0 && stack[0] == root
		}
		resp, err := q.SelectMergeStacktraces(ctx, connect.NewRequest(&querierv1.SelectMergeStacktracesRequest{
			ProfileTypeID: cpuType, LabelSelector: selector, Start: start, End: end,
			StackTraceSelector: &typesv1.StackTraceSelector{CallSite: []*typesv1.Location{{Name: root}}},
		}))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := resp.Msg.Flamegraph.Total, total(p, cpu, keep); got != want {
			t.Fatalf("call site %q: total %d, want %d", root, got, want)
		}
		nodes := decodeFlameGraph(t, resp.Msg.Flamegraph)
		assertSameMap(t, "self under call site", flameSelfByName(nodes), selfByName(p, cpu, keep))

		// The same call site on the time series.
		series, err := q.SelectSeries(ctx, connect.NewRequest(&querierv1.SelectSeriesRequest{
			ProfileTypeID: cpuType, LabelSelector: selector, Start: start, End: end, Step: 15,
			StackTraceSelector: &typesv1.StackTraceSelector{CallSite: []*typesv1.Location{{Name: root}}},
		}))
		if err != nil {
			t.Fatal(err)
		}
		var sum float64
		for _, s := range series.Msg.Series {
			for _, pt := range s.Points {
				sum += pt.Value
			}
		}
		if int64(sum) != total(p, cpu, keep) {
			t.Fatalf("SelectSeries under call site %q sums to %v, want %d", root, sum, total(p, cpu, keep))
		}
	})

	t.Run("SelectMergeProfile", func(t *testing.T) {
		resp, err := q.SelectMergeProfile(ctx, connect.NewRequest(&querierv1.SelectMergeProfileRequest{
			ProfileTypeID: cpuType, LabelSelector: selector, Start: start, End: end,
		}))
		if err != nil {
			t.Fatal(err)
		}
		raw, err := proto.Marshal(resp.Msg)
		if err != nil {
			t.Fatal(err)
		}
		merged, err := profile.ParseData(raw)
		if err != nil {
			t.Fatalf("pprof from SelectMergeProfile does not parse: %v", err)
		}
		if err := merged.CheckValid(); err != nil {
			t.Fatalf("CheckValid: %v", err)
		}
		if len(merged.SampleType) != 1 || merged.SampleType[0].Type != "cpu" || merged.SampleType[0].Unit != "nanoseconds" {
			t.Fatalf("sample types %v", merged.SampleType)
		}
		if got := total(merged, 0, nil); got != want {
			t.Fatalf("merged pprof total %d, want %d", got, want)
		}
		assertSameMap(t, "merged pprof self per function", selfByName(merged, 0, nil), selfByName(p, cpu, nil))
	})

	t.Run("SelectSeries", func(t *testing.T) {
		for _, groupBy := range [][]string{nil, {"service_name"}} {
			resp, err := q.SelectSeries(ctx, connect.NewRequest(&querierv1.SelectSeriesRequest{
				ProfileTypeID: cpuType, LabelSelector: selector, Start: start, End: end, Step: 15, GroupBy: groupBy,
			}))
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Msg.Series) != 1 {
				t.Fatalf("group_by %v: %d series", groupBy, len(resp.Msg.Series))
			}
			s := resp.Msg.Series[0]
			if len(groupBy) == 0 && len(s.Labels) != 0 || len(groupBy) == 1 && (len(s.Labels) != 1 || s.Labels[0].Value != "gotarget") {
				t.Fatalf("group_by %v: labels %v", groupBy, s.Labels)
			}
			var sum float64
			for _, pt := range s.Points {
				sum += pt.Value
				if pt.Timestamp < start || pt.Timestamp > end || (pt.Timestamp-start)%15000 != 0 {
					t.Fatalf("point at %d is not on start + k·step in [start, end]", pt.Timestamp)
				}
			}
			if int64(sum) != want {
				t.Fatalf("points sum to %v, want %d", sum, want)
			}
		}
	})

	t.Run("GetProfileStats", func(t *testing.T) {
		resp, err := q.GetProfileStats(ctx, connect.NewRequest(&typesv1.GetProfileStatsRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if !resp.Msg.DataIngested || resp.Msg.OldestProfileTime != ms(at) || resp.Msg.NewestProfileTime != ms(at) {
			t.Fatalf("stats %+v, want data at %d", resp.Msg, ms(at))
		}
		empty, err := querier(t, newTenant("none")).GetProfileStats(ctx, connect.NewRequest(&typesv1.GetProfileStatsRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		if empty.Msg.DataIngested {
			t.Fatalf("a new tenant has data: %+v", empty.Msg)
		}
	})

	t.Run("JSONCodec", func(t *testing.T) {
		// The Drilldown app and curl users speak connect JSON; same answer.
		resp, err := querier(t, tenant, connect.WithProtoJSON()).SelectMergeStacktraces(ctx, connect.NewRequest(&querierv1.SelectMergeStacktracesRequest{
			ProfileTypeID: cpuType, LabelSelector: selector, Start: start, End: end,
		}))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Msg.Flamegraph.Total != want {
			t.Fatalf("JSON total %d, want %d", resp.Msg.Flamegraph.Total, want)
		}
	})
}

// SelectSeries by Pyroscope's rule: points at start + k·step; point T holds (T − step, T], the
// first point also start − step; rows after the last point ≤ end are not shown.
func TestSelectSeriesBucketing(t *testing.T) {
	ctx := context.Background()
	tenant := newTenant("series")
	p := loadProfile(t, "gotarget__cpu_5s.pb.gz")
	cpu := sampleIndex(t, p, "cpu", "nanoseconds")
	one := total(p, cpu, nil)
	start := time.Now().Add(-10 * time.Minute).Truncate(time.Second)
	step := 15 * time.Second
	end := start.Add(2*step + 5*time.Second) // points: start, start+15s, start+30s
	for _, at := range []time.Time{
		start.Add(-step),                    // first point (start − step is included)
		start.Add(-step - time.Millisecond), // before the read range: nowhere
		start,                               // first point
		start.Add(step),                     // (start, start+step] → start+step
		start.Add(step + time.Millisecond),  // → start+2step
		end,                                 // after start+2step: not shown
	} {
		push(t, tenant, alloyLabels("process_cpu", "edges"), stamped(t, p, at))
	}
	q := querier(t, tenant)
	resp, err := q.SelectSeries(ctx, connect.NewRequest(&querierv1.SelectSeriesRequest{
		ProfileTypeID: cpuType, LabelSelector: "{}", Start: ms(start), End: ms(end), Step: step.Seconds(),
	}))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Msg.Series) != 1 {
		t.Fatalf("%d series", len(resp.Msg.Series))
	}
	type point struct {
		ts    int64
		value float64
	}
	var got []point
	for _, pt := range resp.Msg.Series[0].Points {
		got = append(got, point{pt.Timestamp, pt.Value})
	}
	want := []point{
		{ms(start), float64(2 * one)},
		{ms(start.Add(step)), float64(one)},
		{ms(start.Add(2 * step)), float64(one)},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("points %v, want %v", got, want)
	}

	// Average: the first point holds two profiles of equal total.
	avg := typesv1.TimeSeriesAggregationType_TIME_SERIES_AGGREGATION_TYPE_AVERAGE
	resp, err = q.SelectSeries(ctx, connect.NewRequest(&querierv1.SelectSeriesRequest{
		ProfileTypeID: cpuType, LabelSelector: "{}", Start: ms(start), End: ms(end), Step: step.Seconds(), Aggregation: &avg,
	}))
	if err != nil {
		t.Fatal(err)
	}
	if pts := resp.Msg.Series[0].Points; len(pts) != 3 || pts[0].Value != float64(one) {
		t.Fatalf("average points %v, want first %d", pts, one)
	}

	// Top-N: two services, the bigger one kept by limit=1.
	push(t, tenant, alloyLabels("process_cpu", "small"), stamped(t, p, start.Add(step)))
	resp, err = q.SelectSeries(ctx, connect.NewRequest(&querierv1.SelectSeriesRequest{
		ProfileTypeID: cpuType, LabelSelector: "{}", Start: ms(start), End: ms(end), Step: step.Seconds(),
		GroupBy: []string{"service_name"}, Limit: ptr(int64(1)),
	}))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Msg.Series) != 1 || resp.Msg.Series[0].Labels[0].Value != "edges" {
		t.Fatalf("limit=1 kept %v", resp.Msg.Series)
	}
	resp, err = q.SelectSeries(ctx, connect.NewRequest(&querierv1.SelectSeriesRequest{
		ProfileTypeID: cpuType, LabelSelector: "{}", Start: ms(start), End: ms(end), Step: step.Seconds(),
		GroupBy: []string{"service_name"},
	}))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Msg.Series) != 2 || resp.Msg.Series[0].Labels[0].Value != "edges" || resp.Msg.Series[1].Labels[0].Value != "small" {
		t.Fatalf("group_by service_name: %v", resp.Msg.Series)
	}
}

// Diff: left and right ticks are the totals of two windows.
func TestDiff(t *testing.T) {
	ctx := context.Background()
	tenant := newTenant("diff")
	cpuProfile := loadProfile(t, "gotarget__cpu_5s.pb.gz")
	other := loadProfile(t, "pyroscope__pprof_single_group_with_optional_span_id.pb.gz")
	left := time.Now().Add(-20 * time.Minute).Truncate(time.Millisecond)
	right := time.Now().Add(-5 * time.Minute).Truncate(time.Millisecond)
	push(t, tenant, alloyLabels("process_cpu", "svc"), stamped(t, cpuProfile, left))
	push(t, tenant, alloyLabels("process_cpu", "svc"), stamped(t, other, right))
	wantLeft := total(cpuProfile, sampleIndex(t, cpuProfile, "cpu", "nanoseconds"), nil)
	wantRight := total(other, sampleIndex(t, other, "cpu", "nanoseconds"), nil)

	req := func(at time.Time) *querierv1.SelectMergeStacktracesRequest {
		return &querierv1.SelectMergeStacktracesRequest{
			ProfileTypeID: cpuType, LabelSelector: `{service_name="svc"}`,
			Start: ms(at.Add(-time.Minute)), End: ms(at.Add(time.Minute)),
		}
	}
	resp, err := querier(t, tenant).Diff(ctx, connect.NewRequest(&querierv1.DiffRequest{Left: req(left), Right: req(right)}))
	if err != nil {
		t.Fatal(err)
	}
	fg := resp.Msg.Flamegraph
	if fg.LeftTicks != wantLeft || fg.RightTicks != wantRight || fg.Total != wantLeft+wantRight {
		t.Fatalf("diff ticks left %d right %d total %d, want %d %d", fg.LeftTicks, fg.RightTicks, fg.Total, wantLeft, wantRight)
	}
	if len(fg.Names) == 0 || fg.Names[0] != "total" || len(fg.Levels[0].Values) != 7 {
		t.Fatalf("diff root: names %v level 0 %v", fg.Names[:1], fg.Levels[0].Values)
	}
	for i, l := range fg.Levels {
		if len(l.Values)%7 != 0 {
			t.Fatalf("diff level %d is not groups of 7", i)
		}
	}
	root := fg.Levels[0].Values
	if root[1] != wantLeft || root[4] != wantRight {
		t.Fatalf("diff root %v", root)
	}

	// Mismatched profile types: invalid_argument.
	bad := req(right)
	bad.ProfileTypeID = samplesTyp
	_, err = querier(t, tenant).Diff(ctx, connect.NewRequest(&querierv1.DiffRequest{Left: req(left), Right: bad}))
	wantCode(t, err, connect.CodeInvalidArgument, "diff of two profile types")
	_, err = querier(t, tenant).Diff(ctx, connect.NewRequest(&querierv1.DiffRequest{Left: req(left)}))
	wantCode(t, err, connect.CodeInvalidArgument, "diff without right")
}

// Grafana's "Save & test" and what the client must see for malformed queries.
func TestQuerierErrorsAndHealthCheck(t *testing.T) {
	ctx := context.Background()
	q := querier(t, newTenant("errors"))

	if _, err := q.ProfileTypes(ctx, connect.NewRequest(&querierv1.ProfileTypesRequest{Start: 1000, End: 4000})); err != nil {
		t.Fatalf("Grafana's health check (ProfileTypes 1000..4000): %v", err)
	}
	if _, err := q.ProfileTypes(ctx, connect.NewRequest(&querierv1.ProfileTypesRequest{})); err != nil {
		t.Fatalf("ProfileTypes without a window: %v", err)
	}

	now := time.Now()
	base := func() *querierv1.SelectMergeStacktracesRequest {
		return &querierv1.SelectMergeStacktracesRequest{
			ProfileTypeID: cpuType, LabelSelector: "{}", Start: ms(now.Add(-time.Hour)), End: ms(now),
		}
	}
	cases := map[string]func(*querierv1.SelectMergeStacktracesRequest){
		"bad selector":         func(r *querierv1.SelectMergeStacktracesRequest) { r.LabelSelector = `{service_name=}` },
		"unclosed selector":    func(r *querierv1.SelectMergeStacktracesRequest) { r.LabelSelector = `{service_name="a"` },
		"bad profile type":     func(r *querierv1.SelectMergeStacktracesRequest) { r.ProfileTypeID = "cpu" },
		"missing time range":   func(r *querierv1.SelectMergeStacktracesRequest) { r.Start = 0 },
		"start after end":      func(r *querierv1.SelectMergeStacktracesRequest) { r.Start, r.End = r.End, r.Start },
		"max_nodes over limit": func(r *querierv1.SelectMergeStacktracesRequest) { r.MaxNodes = ptr(int64(1 << 40)) },
		"negative max_nodes":   func(r *querierv1.SelectMergeStacktracesRequest) { r.MaxNodes = ptr(int64(-1)) },
	}
	for name, mutate := range cases {
		r := base()
		mutate(r)
		_, err := q.SelectMergeStacktraces(ctx, connect.NewRequest(r))
		wantCode(t, err, connect.CodeInvalidArgument, name)
	}

	_, err := q.SelectSeries(ctx, connect.NewRequest(&querierv1.SelectSeriesRequest{
		ProfileTypeID: cpuType, LabelSelector: "{}", Start: ms(now.Add(-time.Hour)), End: ms(now), Step: 0,
	}))
	wantCode(t, err, connect.CodeInvalidArgument, "SelectSeries step 0")
	_, err = q.LabelValues(ctx, connect.NewRequest(&typesv1.LabelValuesRequest{Name: "x", Matchers: []string{"{a=~\"(\"}"}}))
	wantCode(t, err, connect.CodeInvalidArgument, "LabelValues bad regex")
	_, err = q.SelectMergeProfile(ctx, connect.NewRequest(&querierv1.SelectMergeProfileRequest{
		ProfileTypeID: "a:b", LabelSelector: "{}", Start: ms(now.Add(-time.Hour)), End: ms(now),
	}))
	wantCode(t, err, connect.CodeInvalidArgument, "SelectMergeProfile bad profile type")

	// Profiles Drilldown's query-cost preview of an empty tenant: nothing to read.
	if _, err := q.AnalyzeQuery(ctx, connect.NewRequest(&querierv1.AnalyzeQueryRequest{Start: ms(now.Add(-time.Hour)), End: ms(now), Query: "{}"})); err != nil {
		t.Fatalf("AnalyzeQuery: %v", err)
	}

	// SelectHeatmap checks its window like the other selects.
	_, err = q.SelectHeatmap(ctx, connect.NewRequest(&querierv1.SelectHeatmapRequest{ProfileTypeID: cpuType, Step: 15}))
	wantCode(t, err, connect.CodeInvalidArgument, "SelectHeatmap without a time range")

	// RPCs Pyrite does not serve: unimplemented, which Grafana shows as such.
	unknown := connect.NewClient[emptypb.Empty, emptypb.Empty](http.DefaultClient, serverURL(t)+"/querier.v1.QuerierService/NoSuchMethod")
	_, err = unknown.CallUnary(ctx, connect.NewRequest(&emptypb.Empty{}))
	wantCode(t, err, connect.CodeUnimplemented, "unknown RPC")
	var connectErr *connect.Error
	if !errors.As(err, &connectErr) || connectErr.Message() == "" {
		t.Fatalf("unknown RPC: the JSON error body carries a message: %v", err)
	}
}
