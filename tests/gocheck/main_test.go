package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/pprof/profile"
)

// writeProfile writes p gzipped (as profile.Write does) into dir and returns the path.
func writeProfile(t *testing.T, dir, name string, p *profile.Profile) string {
	t.Helper()
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := p.Write(f); err != nil {
		t.Fatal(err)
	}
	return path
}

func validProfile() *profile.Profile {
	mainFn := &profile.Function{ID: 1, Name: "main.main"}
	workFn := &profile.Function{ID: 2, Name: "main.work"}
	mainLoc := &profile.Location{ID: 1, Line: []profile.Line{{Function: mainFn, Line: 10}}}
	workLoc := &profile.Location{ID: 2, Line: []profile.Line{{Function: workFn, Line: 20}}}
	return &profile.Profile{
		SampleType: []*profile.ValueType{
			{Type: "samples", Unit: "count"},
			{Type: "cpu", Unit: "nanoseconds"},
		},
		PeriodType: &profile.ValueType{Type: "cpu", Unit: "nanoseconds"},
		Period:     10_000_000,
		Sample: []*profile.Sample{
			{Location: []*profile.Location{workLoc, mainLoc}, Value: []int64{3, 30}},
			{Location: []*profile.Location{mainLoc}, Value: []int64{1, 10}},
		},
		Location: []*profile.Location{mainLoc, workLoc},
		Function: []*profile.Function{mainFn, workFn},
	}
}

func TestCheckValidProfile(t *testing.T) {
	path := writeProfile(t, t.TempDir(), "cpu.pb.gz", validProfile())
	got, ok := check(path)
	if !ok {
		t.Fatalf("check(%s) failed: %+v", path, got)
	}
	want := okResult{
		File:        path,
		OK:          true,
		SampleTypes: []string{"samples/count", "cpu/nanoseconds"},
		Totals:      []int64{4, 40},
		Samples:     2,
		Functions:   []string{"main.main", "main.work"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("check(%s) = %+v, want %+v", path, got, want)
	}
}

func TestCheckRawProfile(t *testing.T) {
	dir := t.TempDir()
	gz := writeProfile(t, dir, "cpu.pb.gz", validProfile())
	p, err := os.Open(gz)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	parsed, err := profile.Parse(p)
	if err != nil {
		t.Fatal(err)
	}
	raw := filepath.Join(dir, "cpu.pb")
	f, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := parsed.WriteUncompressed(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got, ok := check(raw); !ok {
		t.Fatalf("check(%s) failed: %+v", raw, got)
	}
}

func TestCheckRejects(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pb")
	if err := os.WriteFile(garbage, []byte("not a profile"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A sample with more values than there are sample types fails CheckValid.
	bad := validProfile()
	bad.Sample[0].Value = []int64{1, 2, 3}
	invalid := writeProfile(t, dir, "invalid.pb.gz", bad)

	for _, path := range []string{garbage, invalid, filepath.Join(dir, "missing.pb")} {
		got, ok := check(path)
		if ok {
			t.Errorf("check(%s) passed, want failure: %+v", path, got)
			continue
		}
		res, isErr := got.(errResult)
		if !isErr || res.OK || res.File != path || strings.TrimSpace(res.Error) == "" {
			t.Errorf("check(%s) = %+v, want an errResult with an error", path, got)
		}
	}
}
