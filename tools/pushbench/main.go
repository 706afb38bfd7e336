// pushbench: the push load harness. Workers push real corpus profiles to a Pyrite (or any
// Pyroscope-compatible server) through the official push.v1 connect client, the way Alloy's
// pyroscope.write does, while one querier asks for the merged flame graph of the last minutes;
// at the end it prints throughput and latency percentiles of both.
//
//	pushbench -url http://127.0.0.1:4040 -duration 60s -concurrency 16 -services 100 -tenants 4
//
// With -slowloris N and -heavy M it also runs a hostile background meanwhile: N connections
// trickling 50 MB push bodies a kilobyte at a time (each reconnecting when the server cuts it)
// and M clients asking back to back for tenant-0's flame graph with a 10,000-matcher selector.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/google/pprof/profile"
	pushv1 "github.com/grafana/pyroscope/api/gen/proto/go/push/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/push/v1/pushv1connect"
	querierv1 "github.com/grafana/pyroscope/api/gen/proto/go/querier/v1"
	"github.com/grafana/pyroscope/api/gen/proto/go/querier/v1/querierv1connect"
	typesv1 "github.com/grafana/pyroscope/api/gen/proto/go/types/v1"
)

// kind is one profile a simulated service sends every round, as Alloy labels it.
type kind struct {
	file string
	name string
}

var kinds = []kind{
	{"gotarget__cpu_5s.pb.gz", "process_cpu"},
	{"gotarget__allocs_t1.pb.gz", "memory"},
	{"gotarget__goroutine.pb.gz", "goroutine"},
	{"gotarget__mutex_t1.pb.gz", "mutex"},
	{"gotarget__block_t1.pb.gz", "block"},
}

// stamper re-encodes each corpus profile with the current second as its time, once a second,
// so pushes land in the live bucket without costing the pushers a re-encode each.
type stamper struct {
	mu       sync.Mutex
	parsed   []*profile.Profile
	second   int64
	profiles [][]byte
}

func (s *stamper) current() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now().Unix()
	if now != s.second {
		fresh := make([][]byte, len(s.parsed))
		for i, p := range s.parsed {
			c := p.Copy()
			c.TimeNanos = now * int64(time.Second)
			var buf bytes.Buffer
			if err := c.Write(&buf); err != nil {
				panic(err)
			}
			fresh[i] = buf.Bytes()
		}
		s.second, s.profiles = now, fresh
	}
	return s.profiles
}

type latencies struct {
	mu   sync.Mutex
	all  []time.Duration
	errs map[string]int
}

func (l *latencies) record(d time.Duration, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		code := "unknown"
		var ce *connect.Error
		if errors.As(err, &ce) {
			code = ce.Code().String()
		}
		l.errs[code]++
		return
	}
	l.all = append(l.all, d)
}

func (l *latencies) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.all) == 0 {
		return fmt.Sprintf("ok=0 errors=%v", l.errs)
	}
	sort.Slice(l.all, func(i, j int) bool { return l.all[i] < l.all[j] })
	at := func(q float64) time.Duration { return l.all[int(q*float64(len(l.all)-1))] }
	return fmt.Sprintf("ok=%d p50=%s p90=%s p99=%s max=%s errors=%v",
		len(l.all), at(0.5).Round(10*time.Microsecond), at(0.9).Round(10*time.Microsecond),
		at(0.99).Round(10*time.Microsecond), l.all[len(l.all)-1].Round(10*time.Microsecond), l.errs)
}

func tenantHeader(tenant string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("X-Scope-OrgID", tenant)
			return next(ctx, req)
		}
	}
}

func main() {
	url := flag.String("url", "http://127.0.0.1:4040", "server base URL")
	corpus := flag.String("corpus", "../shared/corpus/files", "directory of the corpus profiles")
	duration := flag.Duration("duration", 60*time.Second, "how long to push")
	concurrency := flag.Int("concurrency", 16, "pushes in flight")
	services := flag.Int("services", 100, "simulated services (service_name values) per tenant")
	tenants := flag.Int("tenants", 4, "tenants (X-Scope-OrgID values)")
	queryEvery := flag.Duration("query-every", time.Second, "interval of the flame graph query; 0: none")
	slowloris := flag.Int("slowloris", 0, "background connections trickling large push bodies")
	heavy := flag.Int("heavy", 0, "background clients running 10,000-matcher queries back to back")
	flag.Parse()

	st := &stamper{}
	var rawBytes int64
	for _, k := range kinds {
		raw, err := os.ReadFile(filepath.Join(*corpus, k.file))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		p, err := profile.ParseData(raw)
		if err != nil {
			fmt.Fprintln(os.Stderr, k.file, err)
			os.Exit(2)
		}
		st.parsed = append(st.parsed, p)
	}
	for _, raw := range st.current() {
		rawBytes += int64(len(raw))
	}

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *concurrency * 2}}
	pushers := make([]pushv1connect.PusherServiceClient, *tenants)
	queriers := make([]querierv1connect.QuerierServiceClient, *tenants)
	for t := range pushers {
		opt := connect.WithInterceptors(tenantHeader(fmt.Sprintf("tenant-%d", t)))
		pushers[t] = pushv1connect.NewPusherServiceClient(client, *url, opt)
		queriers[t] = querierv1connect.NewQuerierServiceClient(client, *url, opt)
	}

	pushLat := &latencies{errs: map[string]int{}}
	queryLat := &latencies{errs: map[string]int{}}
	var next, pushedBytes atomic.Int64
	deadline := time.Now().Add(*duration)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < *concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				n := next.Add(1) - 1
				k := int(n) % len(kinds)
				series := int(n) / len(kinds)
				tenant := series % *tenants
				service := (series / *tenants) % *services
				raw := st.current()[k]
				req := &pushv1.PushRequest{Series: []*pushv1.RawProfileSeries{{
					Labels: []*typesv1.LabelPair{
						{Name: "__name__", Value: kinds[k].name},
						{Name: "service_name", Value: fmt.Sprintf("svc-%d", service)},
						{Name: "job", Value: "pushbench"},
						{Name: "instance", Value: fmt.Sprintf("10.0.%d.%d:6060", service/250, service%250)},
						{Name: "__delta__", Value: "false"},
					},
					Samples: []*pushv1.RawSample{{RawProfile: raw}},
				}}}
				began := time.Now()
				_, err := pushers[tenant].Push(context.Background(), connect.NewRequest(req))
				pushLat.record(time.Since(began), err)
				if err == nil {
					pushedBytes.Add(int64(len(raw)))
				}
			}
		}()
	}
	if *queryEvery > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ticker := time.NewTicker(*queryEvery)
			defer ticker.Stop()
			for time.Now().Before(deadline) {
				<-ticker.C
				now := time.Now()
				began := now
				_, err := queriers[0].SelectMergeStacktraces(context.Background(), connect.NewRequest(&querierv1.SelectMergeStacktracesRequest{
					ProfileTypeID: "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
					LabelSelector: "{}",
					Start:         now.Add(-5 * time.Minute).UnixMilli(),
					End:           now.UnixMilli(),
				}))
				queryLat.record(time.Since(began), err)
			}
		}()
	}
	var cut atomic.Int64
	for i := 0; i < *slowloris; i++ {
		go trickle(*url, deadline, &cut)
	}
	heavyLat := &latencies{errs: map[string]int{}}
	if *heavy > 0 {
		var selector strings.Builder
		selector.WriteString("{service_name=~\"svc-.*\"")
		for i := 0; i < 10000; i++ {
			fmt.Fprintf(&selector, ", m%d!~\"x%d.*\"", i, i)
		}
		selector.WriteString("}")
		for i := 0; i < *heavy; i++ {
			go func() {
				for time.Now().Before(deadline) {
					now := time.Now()
					_, err := queriers[0].SelectMergeStacktraces(context.Background(), connect.NewRequest(&querierv1.SelectMergeStacktracesRequest{
						ProfileTypeID: "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
						LabelSelector: selector.String(),
						Start:         now.Add(-5 * time.Minute).UnixMilli(),
						End:           now.UnixMilli(),
					}))
					heavyLat.record(time.Since(now), err)
					if err != nil {
						time.Sleep(100 * time.Millisecond)
					}
				}
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	pushes := len(pushLat.all)
	fmt.Printf("window=%.0fs concurrency=%d tenants=%d services=%d profiles/round=%d (%d bytes)\n",
		elapsed, *concurrency, *tenants, *services, len(kinds), rawBytes)
	fmt.Printf("push:  %.0f profiles/s, %.2f MB/s compressed; %s\n",
		float64(pushes)/elapsed, float64(pushedBytes.Load())/elapsed/1e6, pushLat.summary())
	if *queryEvery > 0 {
		fmt.Printf("query: last 5 min CPU flame graph of tenant-0 (all services) every %s; %s\n", *queryEvery, queryLat.summary())
	}
	if *slowloris > 0 || *heavy > 0 {
		fmt.Printf("background: %d trickling connections (%d cut by the server), %d heavy query clients; heavy: %s\n",
			*slowloris, cut.Load(), *heavy, heavyLat.summary())
	}
}

// trickle holds a connection sending a push body announced as 50 MB a kilobyte every 100 ms
// until the server cuts it, then opens the next one, until the deadline.
func trickle(base string, deadline time.Time, cut *atomic.Int64) {
	u, err := url.Parse(base)
	if err != nil {
		panic(err)
	}
	chunk := bytes.Repeat([]byte("x"), 1024)
	for time.Now().Before(deadline) {
		conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		_, err = fmt.Fprintf(conn, "POST /push.v1.PusherService/Push HTTP/1.1\r\nHost: %s\r\n"+
			"Content-Type: application/proto\r\nContent-Length: %d\r\n\r\n", u.Host, 50<<20)
		for err == nil && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			_, err = conn.Write(chunk)
		}
		if err != nil {
			cut.Add(1)
		}
		conn.Close()
	}
}
