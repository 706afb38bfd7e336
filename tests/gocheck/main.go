// Command gocheck validates pprof files with Go's reference parser
// (github.com/google/pprof/profile), the same code `go tool pprof` and
// Pyroscope use, so Pyrite's tests can prove that the profiles it emits are
// accepted by the Go toolchain, not only by Pyrite's own decoder.
//
// Usage:
//
//	gocheck FILE...
//
// Each FILE may be gzipped or raw protobuf. For every file, one JSON line is
// printed on stdout, in argument order:
//
//	{"file":"a.pb.gz","ok":true,"sample_types":["cpu/nanoseconds"],"totals":[123],"samples":4,"functions":["main.main"]}
//	{"file":"b.pb.gz","ok":false,"error":"..."}
//
// "totals" holds the sum of each sample value column, in "sample_types" order;
// "functions" holds the distinct function names of the profile, sorted.
// The exit status is 1 if any file failed to parse or failed CheckValid, 2 on
// a usage error, 0 otherwise.
//
// How tests call it:
//   - scripts/test.sh builds it once (go build -o target/gocheck ./tests/gocheck)
//     and exports PYRITE_GOCHECK=<absolute path of that binary>; Rust tests run
//     "$PYRITE_GOCHECK" file... and parse the JSON lines.
//   - Without PYRITE_GOCHECK, a test may fall back to
//     `go run ./tests/gocheck FILE...` from the repository root (slower: it
//     compiles each time), or skip when `go` is not on PATH.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/google/pprof/profile"
)

// okResult is the output line of a file that parsed and passed CheckValid.
// Its lists are always present (possibly empty), never null.
type okResult struct {
	File        string   `json:"file"`
	OK          bool     `json:"ok"`
	SampleTypes []string `json:"sample_types"`
	Totals      []int64  `json:"totals"`
	Samples     int      `json:"samples"`
	Functions   []string `json:"functions"`
}

// errResult is the output line of a file that could not be read, parsed or
// validated.
type errResult struct {
	File  string `json:"file"`
	OK    bool   `json:"ok"`
	Error string `json:"error"`
}

// check returns the output line for path and whether the file passed.
func check(path string) (any, bool) {
	fail := func(err string) (any, bool) {
		return errResult{File: path, OK: false, Error: err}, false
	}
	f, err := os.Open(path)
	if err != nil {
		return fail(err.Error())
	}
	defer f.Close()

	// Parse transparently handles gzip-compressed input.
	p, err := profile.Parse(bufio.NewReader(f))
	if err != nil {
		return fail("parse: " + err.Error())
	}
	if err := p.CheckValid(); err != nil {
		return fail("check valid: " + err.Error())
	}

	sampleTypes := make([]string, len(p.SampleType))
	for i, st := range p.SampleType {
		sampleTypes[i] = st.Type + "/" + st.Unit
	}
	totals := make([]int64, len(p.SampleType))
	for _, s := range p.Sample {
		for i, v := range s.Value {
			totals[i] += v
		}
	}
	seen := make(map[string]struct{}, len(p.Function))
	functions := make([]string, 0, len(p.Function))
	for _, fn := range p.Function {
		if _, dup := seen[fn.Name]; dup {
			continue
		}
		seen[fn.Name] = struct{}{}
		functions = append(functions, fn.Name)
	}
	sort.Strings(functions)

	return okResult{
		File:        path,
		OK:          true,
		SampleTypes: sampleTypes,
		Totals:      totals,
		Samples:     len(p.Sample),
		Functions:   functions,
	}, true
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gocheck FILE...")
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	failed := false
	for _, path := range os.Args[1:] {
		r, ok := check(path)
		if !ok {
			failed = true
		}
		if err := enc.Encode(r); err != nil {
			fmt.Fprintln(os.Stderr, "gocheck: write:", err)
			os.Exit(2)
		}
	}
	if err := out.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "gocheck: write:", err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}
