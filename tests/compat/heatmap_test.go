package compat

import (
	"context"
	"fmt"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/pprof/profile"

	querierv1 "github.com/grafana/pyroscope/api/gen/proto/go/querier/v1"
	typesv1 "github.com/grafana/pyroscope/api/gen/proto/go/types/v1"
)

// heatPush is one corpus CPU profile pushed for the heatmap test: its samples carry span ids
// (spansPerProfile of them, distinct per profile) instead of their own labels.
type heatPush struct {
	file    string
	at      time.Time
	profile *profile.Profile
	total   int64
	spans   map[string]int64 // span id → the span's CPU total
}

const spansPerProfile = 3

// withSpans is p with every sample labelled span_id = one of spansPerProfile ids made from
// base, and the span totals of its CPU column.
func withSpans(p *profile.Profile, cpu int, base uint64) (*profile.Profile, map[string]int64) {
	c := p.Copy()
	spans := map[string]int64{}
	for i, s := range c.Sample {
		id := fmt.Sprintf("%016x", base+uint64(i%spansPerProfile))
		s.Label = map[string][]string{"span_id": {id}}
		s.NumLabel = nil
		s.NumUnit = nil
		if s.Value[cpu] != 0 {
			spans[id] += s.Value[cpu]
		}
	}
	return c, spans
}

// SelectHeatmap through the official Go client, both query types, over corpus profiles pushed
// with span ids; each exemplar opened alone (profile_id_selector on SelectMergeStacktraces and
// SelectMergeProfile, span_selector on SelectMergeSpanProfile) is the profile or span pushed.
//
// What "the cells sum to the window's total" means here (README "SelectHeatmap"): every point
// (a profile, or a span of a profile) of the window is counted in exactly one cell, so the
// counts add up to the points; each point lies in its cell's value range, so the window total
// is between Σ count × y_min and Σ count × the range's upper bound; and where each cell holds
// one point (one profile per slot here) the exemplars are the points, so their values add up
// to the window's SelectSeries and SelectMergeStacktraces total exactly.
func TestSelectHeatmap(t *testing.T) {
	ctx := context.Background()
	tenant := newTenant("heatmap")
	step := 10 * time.Second
	start := time.Now().Add(-10 * time.Minute).Truncate(step)
	end := start.Add(4 * step)
	var pushes []heatPush
	var windowTotal int64
	for i, file := range []string{
		"gotarget__cpu_5s.pb.gz",
		"parca_labels.pb.gz",
		"ddnotes_pprof.samples.cpu.001.pb.gz",
		"pyroscope__pprof_go.cpu.labels.pprof",
	} {
		p := loadProfile(t, file)
		cpu := sampleIndex(t, p, "cpu", "nanoseconds")
		spanned, spans := withSpans(p, cpu, uint64(i+1)<<32)
		// One profile per slot (start, start + step], …
		at := start.Add(time.Duration(i)*step + time.Duration(1+i)*time.Second).Truncate(time.Millisecond)
		push(t, tenant, alloyLabels("process_cpu", "heat"), stamped(t, spanned, at))
		h := heatPush{file: file, at: at, profile: spanned, total: total(spanned, cpu, nil), spans: spans}
		windowTotal += h.total
		pushes = append(pushes, h)
	}
	byTime := map[int64]heatPush{}
	for _, h := range pushes {
		byTime[ms(h.at)] = h
	}
	q := querier(t, tenant)
	selector := `{service_name="heat"}`
	heatmap := func(queryType querierv1.HeatmapQueryType, exemplars typesv1.ExemplarType) *querierv1.SelectHeatmapResponse {
		t.Helper()
		resp, err := q.SelectHeatmap(ctx, connect.NewRequest(&querierv1.SelectHeatmapRequest{
			ProfileTypeID: cpuType, LabelSelector: selector, Start: ms(start), End: ms(end), Step: step.Seconds(),
			QueryType: queryType, ExemplarType: exemplars,
		}))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Msg.Series) != 1 {
			t.Fatalf("%d heatmap series, want 1: %v", len(resp.Msg.Series), resp.Msg)
		}
		return resp.Msg
	}
	// cellSums checks the slots' shape and gives Σ counts and the bounds Σ count × y_min and
	// Σ count × upper bound (the next y_min, the largest exemplar for the last range).
	cellSums := func(series *typesv1.HeatmapSeries) (count int64, low, high float64) {
		t.Helper()
		var largest float64
		for _, slot := range series.Slots {
			for _, e := range slot.Exemplars {
				largest = max(largest, float64(e.Value))
			}
		}
		for _, slot := range series.Slots {
			if len(slot.YMin) != 20 || len(slot.Counts) != 20 {
				t.Fatalf("slot %d: %d y_min, %d counts, want 20", slot.Timestamp, len(slot.YMin), len(slot.Counts))
			}
			if (slot.Timestamp-ms(start))%step.Milliseconds() != 0 || slot.Timestamp < ms(start) || slot.Timestamp > ms(end) {
				t.Fatalf("slot at %d is not a step point of [%d, %d]", slot.Timestamp, ms(start), ms(end))
			}
			for b, c := range slot.Counts {
				upper := largest
				if b+1 < len(slot.YMin) {
					upper = slot.YMin[b+1]
				}
				count += int64(c)
				low += float64(c) * slot.YMin[b]
				high += float64(c) * max(upper, slot.YMin[b])
			}
		}
		return count, low, high
	}
	// open reads one profile by id: the flame graph and the pprof export.
	open := func(id string) (*querierv1.FlameGraph, int64, error) {
		merged, err := q.SelectMergeStacktraces(ctx, connect.NewRequest(&querierv1.SelectMergeStacktracesRequest{
			ProfileTypeID: cpuType, LabelSelector: selector, Start: ms(start), End: ms(end), ProfileIdSelector: []string{id},
		}))
		if err != nil {
			return nil, 0, err
		}
		pprofResp, err := q.SelectMergeProfile(ctx, connect.NewRequest(&querierv1.SelectMergeProfileRequest{
			ProfileTypeID: cpuType, LabelSelector: selector, Start: ms(start), End: ms(end), ProfileIdSelector: []string{id},
		}))
		if err != nil {
			return nil, 0, err
		}
		var pprofTotal int64
		for _, s := range pprofResp.Msg.Sample {
			pprofTotal += s.Value[0]
		}
		return merged.Msg.Flamegraph, pprofTotal, nil
	}

	t.Run("Individual", func(t *testing.T) {
		resp := heatmap(querierv1.HeatmapQueryType_HEATMAP_QUERY_TYPE_INDIVIDUAL, typesv1.ExemplarType_EXEMPLAR_TYPE_INDIVIDUAL)
		count, low, high := cellSums(resp.Series[0])
		if count != int64(len(pushes)) {
			t.Fatalf("cells count %d profiles, want %d", count, len(pushes))
		}
		if float64(windowTotal) < low || float64(windowTotal) > high {
			t.Fatalf("window total %d outside the cells' bounds [%f, %f]", windowTotal, low, high)
		}
		var exemplarSum int64
		seen := 0
		for _, slot := range resp.Series[0].Slots {
			for _, e := range slot.Exemplars {
				h, ok := byTime[e.Timestamp]
				if !ok {
					t.Fatalf("exemplar at %d: no profile was pushed then", e.Timestamp)
				}
				if e.Value != h.total || e.SpanId != "" || e.ProfileId == "" {
					t.Fatalf("exemplar %v, want value %d of %s", e, h.total, h.file)
				}
				exemplarSum += e.Value
				seen++
				fg, pprofTotal, err := open(e.ProfileId)
				if err != nil {
					t.Fatal(err)
				}
				if fg.Total != h.total || pprofTotal != h.total {
					t.Fatalf("profile %s opened: flame graph %d, pprof %d, want %d (%s)", e.ProfileId, fg.Total, pprofTotal, h.total, h.file)
				}
				cpu := sampleIndex(t, h.profile, "cpu", "nanoseconds")
				assertSameMap(t, "self per function of "+h.file, flameSelfByName(decodeFlameGraph(t, fg)), selfByName(h.profile, cpu, nil))
			}
		}
		if seen != len(pushes) || exemplarSum != windowTotal {
			t.Fatalf("%d exemplars summing to %d, want %d summing to %d", seen, exemplarSum, len(pushes), windowTotal)
		}
		// The same total from SelectSeries and the plain merge of the window.
		series, err := q.SelectSeries(ctx, connect.NewRequest(&querierv1.SelectSeriesRequest{
			ProfileTypeID: cpuType, LabelSelector: selector, Start: ms(start), End: ms(end), Step: step.Seconds(),
		}))
		if err != nil {
			t.Fatal(err)
		}
		var seriesSum float64
		for _, p := range series.Msg.Series[0].Points {
			seriesSum += p.Value
		}
		if seriesSum != float64(windowTotal) {
			t.Fatalf("SelectSeries sums to %f, heatmap exemplars to %d", seriesSum, windowTotal)
		}
		if got := flameTotal(t, tenant, cpuType, selector, start.Add(2*step)); got != windowTotal {
			t.Fatalf("SelectMergeStacktraces total %d, want %d", got, windowTotal)
		}
		// No exemplars asked: none, same counts.
		bare := heatmap(querierv1.HeatmapQueryType_HEATMAP_QUERY_TYPE_INDIVIDUAL, typesv1.ExemplarType_EXEMPLAR_TYPE_NONE)
		for _, slot := range bare.Series[0].Slots {
			if len(slot.Exemplars) != 0 {
				t.Fatalf("exemplars without asking: %v", slot.Exemplars)
			}
		}
		if c, _, _ := cellSums(bare.Series[0]); c != count {
			t.Fatalf("counts %d without exemplars, %d with", c, count)
		}
	})

	t.Run("Span", func(t *testing.T) {
		resp := heatmap(querierv1.HeatmapQueryType_HEATMAP_QUERY_TYPE_SPAN, typesv1.ExemplarType_EXEMPLAR_TYPE_SPAN)
		points := 0
		for _, h := range pushes {
			points += len(h.spans)
		}
		count, low, high := cellSums(resp.Series[0])
		if count != int64(points) {
			t.Fatalf("cells count %d spans, want %d", count, points)
		}
		// Every sample carries a span: the spans add up to the window total.
		if float64(windowTotal) < low || float64(windowTotal) > high {
			t.Fatalf("window total %d outside the cells' bounds [%f, %f]", windowTotal, low, high)
		}
		seen := 0
		for _, slot := range resp.Series[0].Slots {
			for _, e := range slot.Exemplars {
				h, ok := byTime[e.Timestamp]
				if !ok {
					t.Fatalf("span exemplar at %d: no profile was pushed then", e.Timestamp)
				}
				if want, ok := h.spans[e.SpanId]; !ok || e.Value != want {
					t.Fatalf("span exemplar %v: want value %d of span %s in %s", e, want, e.SpanId, h.file)
				}
				seen++
				span, err := q.SelectMergeSpanProfile(ctx, connect.NewRequest(&querierv1.SelectMergeSpanProfileRequest{
					ProfileTypeID: cpuType, LabelSelector: selector, Start: ms(start), End: ms(end), SpanSelector: []string{e.SpanId},
				}))
				if err != nil {
					t.Fatal(err)
				}
				if span.Msg.Flamegraph.Total != e.Value {
					t.Fatalf("span %s opened: total %d, exemplar says %d", e.SpanId, span.Msg.Flamegraph.Total, e.Value)
				}
				// The span's profile opens whole.
				fg, _, err := open(e.ProfileId)
				if err != nil {
					t.Fatal(err)
				}
				if fg.Total != h.total {
					t.Fatalf("profile of span %s: total %d, want %d", e.SpanId, fg.Total, h.total)
				}
			}
		}
		if seen == 0 || seen > points {
			t.Fatalf("%d span exemplars for %d spans", seen, points)
		}
	})

	t.Run("ProfileIdSelectorErrors", func(t *testing.T) {
		fg, pprofTotal, err := open("00000000-0000-0000-0000-00000000abcd")
		if err != nil {
			t.Fatal(err)
		}
		if (fg != nil && fg.Total != 0) || pprofTotal != 0 {
			t.Fatalf("an unknown profile id opened something: %v, %d", fg, pprofTotal)
		}
		for _, bad := range []string{"", "42", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz", "0000000000000000000000000000000000ab"} {
			_, _, err := open(bad)
			wantCode(t, err, connect.CodeInvalidArgument, fmt.Sprintf("profile id %q", bad))
		}
	})
}

// SelectSeries with EXEMPLAR_TYPE_INDIVIDUAL (Grafana's profilesExemplars toggle): each point
// carries its heaviest profile, whose id opens that profile alone; SPAN is Unimplemented and
// an unknown type InvalidArgument, as in Pyroscope 2.
func TestSelectSeriesExemplars(t *testing.T) {
	ctx := context.Background()
	tenant := newTenant("series-exemplars")
	p := loadProfile(t, "gotarget__cpu_5s.pb.gz")
	one := total(p, sampleIndex(t, p, "cpu", "nanoseconds"), nil)
	start := time.Now().Add(-10 * time.Minute).Truncate(time.Second)
	step := 15 * time.Second
	end := start.Add(step)
	heavy := start.Add(-5 * time.Second)
	// Point `start`: one profile at start−10s, two pushes at one millisecond (one profile of
	// twice the total) at start−5s. Point start+step: one profile.
	for _, at := range []time.Time{start.Add(-10 * time.Second), heavy, heavy, start.Add(step)} {
		push(t, tenant, alloyLabels("process_cpu", "exemplars"), stamped(t, p, at))
	}
	q := querier(t, tenant)
	series := func(exemplarType typesv1.ExemplarType) (*connect.Response[querierv1.SelectSeriesResponse], error) {
		return q.SelectSeries(ctx, connect.NewRequest(&querierv1.SelectSeriesRequest{
			ProfileTypeID: cpuType, LabelSelector: "{}", Start: ms(start), End: ms(end), Step: step.Seconds(),
			ExemplarType: exemplarType,
		}))
	}
	resp, err := series(typesv1.ExemplarType_EXEMPLAR_TYPE_INDIVIDUAL)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Msg.Series) != 1 || len(resp.Msg.Series[0].Points) != 2 {
		t.Fatalf("series %v", resp.Msg.Series)
	}
	points := resp.Msg.Series[0].Points
	if points[0].Value != float64(3*one) || points[1].Value != float64(one) {
		t.Fatalf("point values %v, %v; want %d, %d", points[0].Value, points[1].Value, 3*one, one)
	}
	want := []struct {
		at    time.Time
		value int64
	}{{heavy, 2 * one}, {start.Add(step), one}}
	for i, point := range points {
		if len(point.Exemplars) != 1 {
			t.Fatalf("point %d: %d exemplars, want 1", i, len(point.Exemplars))
		}
		e := point.Exemplars[0]
		if e.Timestamp != ms(want[i].at) || e.Value != want[i].value || e.ProfileId == "" {
			t.Fatalf("point %d exemplar %v, want time %d value %d", i, e, ms(want[i].at), want[i].value)
		}
		opened, err := q.SelectMergeStacktraces(ctx, connect.NewRequest(&querierv1.SelectMergeStacktracesRequest{
			ProfileTypeID: cpuType, LabelSelector: "{}", Start: ms(start.Add(-step)), End: ms(end), ProfileIdSelector: []string{e.ProfileId},
		}))
		if err != nil {
			t.Fatal(err)
		}
		if opened.Msg.Flamegraph.Total != e.Value {
			t.Fatalf("exemplar %s opens a flame graph of %d, want %d", e.ProfileId, opened.Msg.Flamegraph.Total, e.Value)
		}
	}
	for _, none := range []typesv1.ExemplarType{typesv1.ExemplarType_EXEMPLAR_TYPE_UNSPECIFIED, typesv1.ExemplarType_EXEMPLAR_TYPE_NONE} {
		resp, err := series(none)
		if err != nil {
			t.Fatal(err)
		}
		for _, point := range resp.Msg.Series[0].Points {
			if len(point.Exemplars) != 0 {
				t.Fatalf("%v: exemplars %v", none, point.Exemplars)
			}
		}
	}
	_, err = series(typesv1.ExemplarType_EXEMPLAR_TYPE_SPAN)
	wantCode(t, err, connect.CodeUnimplemented, "SelectSeries exemplar type SPAN")
	_, err = series(typesv1.ExemplarType(99))
	wantCode(t, err, connect.CodeInvalidArgument, "SelectSeries exemplar type 99")
}
