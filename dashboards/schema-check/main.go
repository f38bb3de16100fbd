// schema-check validates Grafana dashboard JSON files strictly against
// Grafana's own schema types (github.com/grafana/grafana-foundation-sdk/go):
// every file must unmarshal with dashboard.Dashboard.UnmarshalJSONStrict (no
// unknown field, no wrong type, panel options and Prometheus queries checked
// by their plugin's types) and pass Validate.
//
//	go run . FILE_OR_FOLDER...
//
// It prints one line per file (ok, or each error with its JSON path) and
// exits 1 if any file fails. Built and run by `cargo test -p dashboards`.
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// problems turns what UnmarshalJSONStrict and Validate return into a list of
// messages. Both return a cog.BuildErrors list; an empty one (not nil) means
// success.
func problems(err error) []string {
	if err == nil {
		return nil
	}
	var build cog.BuildErrors
	if errors.As(err, &build) {
		out := make([]string, 0, len(build))
		for _, e := range build {
			out = append(out, e.Error())
		}
		return out
	}
	return []string{err.Error()}
}

func check(path string) []string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return []string{err.Error()}
	}
	var d dashboard.Dashboard
	out := problems(d.UnmarshalJSONStrict(raw))
	if len(out) > 0 {
		return out
	}
	out = problems(d.Validate())
	if d.Title == nil || *d.Title == "" {
		out = append(out, "title: missing")
	}
	if d.Uid == nil || *d.Uid == "" {
		out = append(out, "uid: missing")
	}
	if len(d.Panels) == 0 {
		out = append(out, "panels: none")
	}
	return out
}

func files(args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		info, err := os.Stat(a)
		if err != nil {
			return nil, err
		}
		if !info.IsDir() {
			out = append(out, a)
			continue
		}
		matches, err := filepath.Glob(filepath.Join(a, "*.json"))
		if err != nil {
			return nil, err
		}
		if len(matches) == 0 {
			return nil, fmt.Errorf("%s: no .json file in this folder", a)
		}
		out = append(out, matches...)
	}
	sort.Strings(out)
	return out, nil
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: schema-check FILE_OR_FOLDER...")
		os.Exit(2)
	}
	plugins.RegisterDefaultPlugins()
	paths, err := files(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "schema-check:", err)
		os.Exit(2)
	}
	failed := 0
	for _, p := range paths {
		if errs := check(p); len(errs) > 0 {
			failed++
			fmt.Printf("FAIL %s\n  %s\n", p, strings.Join(errs, "\n  "))
		} else {
			fmt.Printf("ok   %s\n", p)
		}
	}
	fmt.Printf("schema-check: %d dashboards valid, %d invalid\n", len(paths)-failed, failed)
	if failed > 0 {
		os.Exit(1)
	}
}
