// pyrite-demo is the service `make run` starts beside Pyrite, so that the first look at the UI
// shows real flame graphs of every profile type without anything pushed by hand. It serves Go's
// net/http/pprof and keeps a few named workloads running, each visible under its own name:
//
//   - hashPasswords         CPU: SHA-256 key stretching (process_cpu)
//   - encodeCatalog         CPU and allocations: encoding/json of a product catalog
//   - churnAllocations      short-lived allocations and a steady cache (memory alloc_* and inuse_*)
//   - contendInventoryLock  goroutines fighting over one mutex (mutex)
//   - waitForOrders         goroutines blocked on a channel fed slowly (block)
//   - parkSessions          idle goroutines parked on a channel (goroutine)
//
// The CPU workloads run in short bursts (-cpu-share of one core in all), so the demo stays
// light on a small machine. Standard library only: it builds offline.
//
// Usage: pyrite-demo [-listen 127.0.0.1:0] [-addr-file FILE] [-cpu-share 0.25]
package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// burst is how long a CPU workload runs before it sleeps; its sleep follows from -cpu-share.
const burst = 10 * time.Millisecond

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve net/http/pprof on (port 0: any free port)")
	addrFile := flag.String("addr-file", "", "write the address actually listened on to this file (for port 0)")
	cpuShare := flag.Float64("cpu-share", 0.25, "share of one core the CPU workloads use together (0.01-1)")
	sessions := flag.Int("sessions", 40, "idle goroutines parked by parkSessions")
	flag.Parse()
	if *cpuShare < 0.01 || *cpuShare > 1 {
		log.Fatalf("-cpu-share %v: must be between 0.01 and 1", *cpuShare)
	}

	// Mutex and block profiles are empty unless sampling is switched on.
	runtime.SetMutexProfileFraction(5)
	runtime.SetBlockProfileRate(int(time.Millisecond.Nanoseconds()))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("listening on %s: %v", *listen, err)
	}
	address := listener.Addr().String()
	if *addrFile != "" {
		if err := writeAtomically(*addrFile, address+"\n"); err != nil {
			log.Fatalf("writing %s: %v", *addrFile, err)
		}
	}

	// Two thirds of the CPU share go to hashing, one third to JSON, so the flame graph has a
	// clear widest frame and a second one. Each workload is its goroutine's root frame.
	var workers sync.WaitGroup
	workers.Add(1)
	go hashPasswords(ctx, &workers, *cpuShare*2/3)
	workers.Add(1)
	go encodeCatalog(ctx, &workers, *cpuShare/3)
	workers.Add(1)
	go churnAllocations(ctx, &workers)
	for i := 0; i < 4; i++ {
		workers.Add(1)
		go contendInventoryLock(ctx, &workers)
	}
	orders := make(chan int)
	workers.Add(1)
	go feedOrders(ctx, &workers, orders)
	for i := 0; i < 3; i++ {
		workers.Add(1)
		go waitForOrders(ctx, &workers, orders)
	}
	workers.Add(1)
	go parkSessions(ctx, &workers, *sessions)

	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "pyrite-demo: workloads hashPasswords, encodeCatalog, churnAllocations,")
		fmt.Fprintln(w, "contendInventoryLock, waitForOrders, parkSessions; profiles at /debug/pprof/")
	})
	server := &http.Server{Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- server.Serve(listener) }()
	log.Printf("pyrite-demo serving net/http/pprof on http://%s/debug/pprof/", address)

	select {
	case <-ctx.Done():
	case err := <-served:
		if !errors.Is(err, http.ErrServerClosed) {
			log.Fatalf("serving: %v", err)
		}
	}
	// A CPU profile in progress (up to its `seconds`) must not hold up a stop.
	shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = server.Shutdown(shutdown)
	workers.Wait()
	log.Print("pyrite-demo stopped")
}

// writeAtomically writes text to path through a temporary file and a rename, so a reader never
// sees half an address.
func writeAtomically(path, text string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	temporary := path + ".tmp"
	if err := os.WriteFile(temporary, []byte(text), 0o644); err != nil {
		return err
	}
	return os.Rename(temporary, path)
}

// dutyCycle runs work in bursts, sleeping between them so that work takes share of one core.
func dutyCycle(ctx context.Context, share float64, work func()) {
	pause := time.Duration(float64(burst) * (1 - share) / share)
	for ctx.Err() == nil {
		until := time.Now().Add(burst)
		for time.Now().Before(until) {
			work()
		}
		sleep(ctx, pause)
	}
}

func sleep(ctx context.Context, duration time.Duration) {
	timer := time.NewTimer(duration)
	defer timer.Stop()
	select {
	case <-ctx.Done():
	case <-timer.C:
	}
}

var digestSink [sha256.Size]byte

// hashPasswords stretches a password the way a login handler would: many rounds of SHA-256.
func hashPasswords(ctx context.Context, done *sync.WaitGroup, share float64) {
	defer done.Done()
	password := []byte("correct horse battery staple")
	dutyCycle(ctx, share, func() {
		digest := sha256.Sum256(password)
		for round := 0; round < 64; round++ {
			digest = sha256.Sum256(digest[:])
		}
		digestSink = digest
	})
}

type product struct {
	ID       int               `json:"id"`
	Name     string            `json:"name"`
	Price    float64           `json:"price"`
	Tags     []string          `json:"tags"`
	Supplier map[string]string `json:"supplier"`
}

// encodeCatalog serves the product catalog as JSON, as a listing endpoint would.
func encodeCatalog(ctx context.Context, done *sync.WaitGroup, share float64) {
	defer done.Done()
	catalog := make([]product, 200)
	for i := range catalog {
		catalog[i] = product{
			ID:       i,
			Name:     fmt.Sprintf("product-%03d", i),
			Price:    float64(i) * 1.25,
			Tags:     []string{"demo", "catalog", fmt.Sprintf("shelf-%d", i%12)},
			Supplier: map[string]string{"name": "acme", "country": "nowhere"},
		}
	}
	encoder := json.NewEncoder(io.Discard)
	dutyCycle(ctx, share, func() {
		if err := encoder.Encode(catalog); err != nil {
			log.Printf("encodeCatalog: %v", err)
		}
	})
}

// Package-level, so the compiler can neither keep them on the stack nor drop them as unused.
var (
	scratchSink []byte
	blockCache  = make([][]byte, 128)
)

// churnAllocations allocates short-lived buffers of mixed sizes (about 4 MB/s: alloc_*) and
// keeps a cache of 128 blocks of 64 KiB, one replaced every 200 ms: a steady 8 MiB in use, large
// enough that Go's sampling (one sample per 512 KiB on average) always shows it in inuse_*.
func churnAllocations(ctx context.Context, done *sync.WaitGroup) {
	defer done.Done()
	for i := range blockCache {
		blockCache[i] = make([]byte, 64<<10)
	}
	ticker := time.NewTicker(2 * time.Millisecond)
	defer ticker.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		buffer := make([]byte, 4<<10+(i%8)<<10)
		buffer[0] = byte(i)
		scratchSink = buffer
		if i%100 == 0 {
			blockCache[(i/100)%len(blockCache)] = make([]byte, 64<<10)
		}
	}
}

var (
	inventoryLock sync.Mutex
	inventory     = map[int]int{}
)

// contendInventoryLock updates a shared inventory under one mutex, holding it long enough for
// its peers to wait.
func contendInventoryLock(ctx context.Context, done *sync.WaitGroup) {
	defer done.Done()
	for i := 0; ctx.Err() == nil; i++ {
		inventoryLock.Lock()
		inventory[i%100]++
		time.Sleep(200 * time.Microsecond)
		inventoryLock.Unlock()
		sleep(ctx, time.Millisecond)
	}
}

// feedOrders sends an order every 20 ms, slower than waitForOrders can take them.
func feedOrders(ctx context.Context, done *sync.WaitGroup, orders chan<- int) {
	defer done.Done()
	for i := 0; ; i++ {
		sleep(ctx, 20*time.Millisecond)
		select {
		case <-ctx.Done():
			return
		case orders <- i:
		}
	}
}

// waitForOrders blocks on the order channel (block profile) and handles each order briefly.
func waitForOrders(ctx context.Context, done *sync.WaitGroup, orders <-chan int) {
	defer done.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case order := <-orders:
			digestSink = sha256.Sum256([]byte(fmt.Sprint(order)))
		}
	}
}

// parkSessions keeps idle sessions open: goroutines parked until the demo stops.
func parkSessions(ctx context.Context, done *sync.WaitGroup, count int) {
	defer done.Done()
	var parked sync.WaitGroup
	for i := 0; i < count; i++ {
		parked.Add(1)
		go func() {
			defer parked.Done()
			<-ctx.Done()
		}()
	}
	parked.Wait()
}
