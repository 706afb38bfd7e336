// scrapebench serves simulated Go pprof targets for the scraping benchmark: N listeners on
// consecutive loopback ports, each answering the net/http/pprof paths Pyrite scrapes with real
// profiles of the corpus (../shared/corpus/files/gotarget__*):
//
//   - /debug/pprof/profile?seconds=S  sleeps S seconds (as Go's handler does), then cpu_5s
//   - /debug/pprof/allocs, /heap     allocs_t0 and allocs_t1 alternately, per target
//   - /debug/pprof/mutex, /block     mutex_t0/t1, block_t0/t1 alternately
//   - /debug/pprof/goroutine          goroutine
//
// Alternating t0/t1 makes every other scrape of a cumulative profile a real delta (t1 − t0)
// and the others a restart that re-primes, so Pyrite decodes, diffs and ingests as for a live
// service. Usage: scrapebench -corpus DIR -base-port 20000 -targets 200
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"
)

func main() {
	corpus := flag.String("corpus", "../../../shared/corpus/files", "corpus files directory")
	basePort := flag.Int("base-port", 20000, "first port")
	targets := flag.Int("targets", 200, "number of targets")
	flag.Parse()

	load := func(name string) []byte {
		data, err := os.ReadFile(filepath.Join(*corpus, "gotarget__"+name+".pb.gz"))
		if err != nil {
			log.Fatal(err)
		}
		return data
	}
	cpu, goroutine := load("cpu_5s"), load("goroutine")
	pairs := map[string][2][]byte{
		"allocs": {load("allocs_t0"), load("allocs_t1")},
		"heap":   {load("allocs_t0"), load("allocs_t1")},
		"mutex":  {load("mutex_t0"), load("mutex_t1")},
		"block":  {load("block_t0"), load("block_t1")},
	}
	write := func(w http.ResponseWriter, body []byte) {
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(body)
	}
	for i := 0; i < *targets; i++ {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/profile", func(w http.ResponseWriter, r *http.Request) {
			seconds, _ := strconv.Atoi(r.URL.Query().Get("seconds"))
			time.Sleep(time.Duration(seconds) * time.Second)
			write(w, cpu)
		})
		mux.HandleFunc("/debug/pprof/goroutine", func(w http.ResponseWriter, r *http.Request) { write(w, goroutine) })
		for name, pair := range pairs {
			pair := pair
			var n atomic.Int64
			mux.HandleFunc("/debug/pprof/"+name, func(w http.ResponseWriter, r *http.Request) {
				write(w, pair[n.Add(1)%2])
			})
		}
		address := fmt.Sprintf("127.0.0.1:%d", *basePort+i)
		go func() { log.Fatal(http.ListenAndServe(address, mux)) }()
	}
	log.Printf("serving %d simulated targets on 127.0.0.1:%d-%d", *targets, *basePort, *basePort+*targets-1)
	select {}
}
