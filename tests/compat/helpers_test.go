// Package compat checks Pyrite against Pyroscope's OFFICIAL generated connect clients (the ones
// Grafana's data source, Alloy and profilecli use), with expectations computed independently
// from the pushed pprof files by github.com/google/pprof/profile.
//
// The server is started by the Rust test tests/compat.rs, which passes its URL in PYRITE_URL
// (and a second server with a 1 MiB body limit in PYRITE_SMALL_BODY_URL).
package compat

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/pprof/profile"

	pushv1 "github.com/grafana/pyroscope/api/gen/proto/go/push/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/push/v1/pushv1connect"
	querierv1 "github.com/grafana/pyroscope/api/gen/proto/go/querier/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/querier/v1/querierv1connect"
	typesv1 "github.com/grafana/pyroscope/api/gen/proto/go/types/v1"
)

const (
	cpuType    = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
	samplesTyp = "process_cpu:samples:count:cpu:nanoseconds"
)

// serverURL is PYRITE_URL; a missing one fails (tests never skip silently).
func serverURL(t *testing.T) string {
	t.Helper()
	url := os.Getenv("PYRITE_URL")
	if url == "" {
		t.Fatal("PYRITE_URL is not set: run these tests through `cargo test --test compat`")
	}
	return strings.TrimRight(url, "/")
}

var tenantSeq atomic.Int64

// newTenant gives every test its own tenant, so tests share one server without seeing each
// other's data.
func newTenant(name string) string {
	return fmt.Sprintf("compat-%d-%d-%s", time.Now().UnixNano(), tenantSeq.Add(1), name)
}

// tenantInterceptor sets X-Scope-OrgID, as Grafana's data source does from its custom headers.
func tenantInterceptor(tenant string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("X-Scope-OrgID", tenant)
			return next(ctx, req)
		}
	}
}

// querier is the client exactly as Grafana builds it (binary proto, no options) plus the tenant.
func querier(t *testing.T, tenant string, opts ...connect.ClientOption) querierv1connect.QuerierServiceClient {
	opts = append(opts, connect.WithInterceptors(tenantInterceptor(tenant)))
	return querierv1connect.NewQuerierServiceClient(http.DefaultClient, serverURL(t), opts...)
}

// pusher is the push client as Alloy's pyroscope.write builds it.
func pusher(t *testing.T, url, tenant string, opts ...connect.ClientOption) pushv1connect.PusherServiceClient {
	opts = append(opts, connect.WithInterceptors(tenantInterceptor(tenant)))
	return pushv1connect.NewPusherServiceClient(http.DefaultClient, url, opts...)
}

func corpusPath(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv("PYRITE_CORPUS_DIR")
	if dir == "" {
		dir = "../../../shared/corpus"
	}
	path := filepath.Join(dir, "files", name)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("corpus file: %v", err)
	}
	return path
}

// loadProfile parses a corpus file with Go's reference pprof parser.
func loadProfile(t *testing.T, name string) *profile.Profile {
	t.Helper()
	data, err := os.ReadFile(corpusPath(t, name))
	if err != nil {
		t.Fatal(err)
	}
	p, err := profile.ParseData(data)
	if err != nil {
		t.Fatalf("parse %s: %v", name, err)
	}
	return p
}

// stamped encodes p (gzipped, as Go's net/http/pprof serves it) with its time set to at.
func stamped(t *testing.T, p *profile.Profile, at time.Time) []byte {
	t.Helper()
	c := p.Copy()
	c.TimeNanos = at.UnixNano()
	var buf bytes.Buffer
	if err := c.Write(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// labels builds a label set; pairs are name, value, name, value, ...
func labels(pairs ...string) []*typesv1.LabelPair {
	out := make([]*typesv1.LabelPair, 0, len(pairs)/2)
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, &typesv1.LabelPair{Name: pairs[i], Value: pairs[i+1]})
	}
	return out
}

// alloyLabels is the label set Alloy's pyroscope.scrape → pyroscope.write sends for one
// target and profile (`__delta__="false"`: Alloy already sent deltas).
func alloyLabels(name, service string) []*typesv1.LabelPair {
	return labels(
		"__name__", name,
		"service_name", service,
		"job", "pyroscope.scrape.default",
		"instance", "127.0.0.1:6060",
		"__delta__", "false",
	)
}

// push sends one series with one profile and fails the test on error.
func push(t *testing.T, tenant string, lbls []*typesv1.LabelPair, raw []byte) {
	t.Helper()
	req := &pushv1.PushRequest{Series: []*pushv1.RawProfileSeries{{
		Labels:  lbls,
		Samples: []*pushv1.RawSample{{RawProfile: raw, ID: fmt.Sprintf("%016x", time.Now().UnixNano())}},
	}}}
	if _, err := pusher(t, serverURL(t), tenant).Push(context.Background(), connect.NewRequest(req)); err != nil {
		t.Fatalf("push: %v", err)
	}
}

// sampleIndex is the index of the sample type named typ:unit.
func sampleIndex(t *testing.T, p *profile.Profile, typ, unit string) int {
	t.Helper()
	for i, st := range p.SampleType {
		if st.Type == typ && st.Unit == unit {
			return i
		}
	}
	t.Fatalf("profile has no sample type %s:%s", typ, unit)
	return -1
}

// total sums one sample type over the samples keep accepts (all if keep is nil).
func total(p *profile.Profile, index int, keep func(*profile.Sample) bool) int64 {
	var sum int64
	for _, s := range p.Sample {
		if keep == nil || keep(s) {
			sum += s.Value[index]
		}
	}
	return sum
}

// stackRootFirst gives a sample's frames root first, inlined callees after their caller, by
// function name: how Pyroscope (and Pyrite) build flame graph stacks.
func stackRootFirst(s *profile.Sample) []string {
	var names []string
	for i := len(s.Location) - 1; i >= 0; i-- {
		lines := s.Location[i].Line
		for j := len(lines) - 1; j >= 0; j-- {
			names = append(names, lines[j].Function.Name)
		}
	}
	return names
}

// selfByName is each function's self value (the sample's leaf frame) in the profile.
func selfByName(p *profile.Profile, index int, keep func(*profile.Sample) bool) map[string]int64 {
	out := map[string]int64{}
	for _, s := range p.Sample {
		if keep != nil && !keep(s) {
			continue
		}
		stack := stackRootFirst(s)
		if len(stack) == 0 || s.Value[index] == 0 {
			continue
		}
		out[stack[len(stack)-1]] += s.Value[index]
	}
	return out
}

func ms(t time.Time) int64 { return t.UnixMilli() }

func ptr[T any](v T) *T { return &v }

// flameNode is one decoded flame graph node.
type flameNode struct {
	level, x, total, self int64
	name                  string
}

// decodeFlameGraph decodes the delta-encoded levels and checks the structure Grafana relies
// on: root `total` at offset 0 and name 0, every node inside its parent's span after the
// parent's self, and total = self + children for every node. It returns the nodes.
func decodeFlameGraph(t *testing.T, fg *querierv1.FlameGraph) []flameNode {
	t.Helper()
	if fg == nil {
		t.Fatal("flamegraph missing")
	}
	if len(fg.Names) == 0 || fg.Names[0] != "total" {
		t.Fatalf("names[0] = %q, want total", fg.Names)
	}
	if len(fg.Levels) == 0 || len(fg.Levels[0].Values) != 4 {
		t.Fatalf("level 0 must hold exactly the root: %v", fg.Levels)
	}
	root := fg.Levels[0].Values
	if root[0] != 0 || root[3] != 0 || root[1] != fg.Total {
		t.Fatalf("root = %v, want [0 %d _ 0]", root, fg.Total)
	}
	var nodes []flameNode
	var previous []flameNode
	var maxSelf int64
	for level, l := range fg.Levels {
		if len(l.Values)%4 != 0 {
			t.Fatalf("level %d has %d values, not groups of 4", level, len(l.Values))
		}
		var current []flameNode
		var end int64
		for i := 0; i < len(l.Values); i += 4 {
			v := l.Values[i : i+4]
			if v[0] < 0 || v[1] < 0 || v[2] < 0 || v[2] > v[1] || v[3] < 0 || int(v[3]) >= len(fg.Names) {
				t.Fatalf("level %d node %v is malformed", level, v)
			}
			n := flameNode{level: int64(level), x: end + v[0], total: v[1], self: v[2], name: fg.Names[v[3]]}
			end = n.x + n.total
			current = append(current, n)
			if n.self > maxSelf {
				maxSelf = n.self
			}
		}
		if level > 0 {
			// Children of each parent: inside [x + self, x + total), totals adding up.
			for _, parent := range previous {
				var children int64
				for _, child := range current {
					if child.x >= parent.x && child.x < parent.x+parent.total {
						if child.x < parent.x+parent.self || child.x+child.total > parent.x+parent.total {
							t.Fatalf("node %+v sticks out of its parent %+v", child, parent)
						}
						children += child.total
					}
				}
				if parent.self+children != parent.total {
					t.Fatalf("node %+v: self + children = %d", parent, parent.self+children)
				}
			}
			for _, child := range current {
				inside := false
				for _, parent := range previous {
					if child.x >= parent.x && child.x+child.total <= parent.x+parent.total {
						inside = true
					}
				}
				if !inside {
					t.Fatalf("node %+v has no parent on level %d", child, level-1)
				}
			}
		}
		nodes = append(nodes, current...)
		previous = current
	}
	// Leaves: nodes with nothing below are all self.
	for _, parent := range previous {
		if parent.self != parent.total {
			t.Fatalf("deepest node %+v: self != total", parent)
		}
	}
	if maxSelf != fg.MaxSelf {
		t.Fatalf("max_self = %d, nodes say %d", fg.MaxSelf, maxSelf)
	}
	return nodes
}

// flameSelfByName sums the decoded nodes' self per name.
func flameSelfByName(nodes []flameNode) map[string]int64 {
	out := map[string]int64{}
	for _, n := range nodes {
		if n.level > 0 && n.self > 0 {
			out[n.name] += n.self
		}
	}
	return out
}

func assertSameMap(t *testing.T, what string, got, want map[string]int64) {
	t.Helper()
	var diffs []string
	for k, v := range want {
		if got[k] != v {
			diffs = append(diffs, fmt.Sprintf("%s: got %d want %d", k, got[k], v))
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: got %d, not expected", k, v))
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		if len(diffs) > 10 {
			diffs = diffs[:10]
		}
		t.Fatalf("%s differs:\n%s", what, strings.Join(diffs, "\n"))
	}
}

// wantCode asserts a connect error with the given code (which the Go client can only see
// when the server answers with a JSON error body).
func wantCode(t *testing.T, err error, code connect.Code, what string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %v", what, code)
	}
	if got := connect.CodeOf(err); got != code {
		t.Fatalf("%s: code %v (%v), want %v", what, got, err, code)
	}
}
