// Command kumajudge validates TrafficRoutes with Kuma v1.8.1's own validator.
//
//	kumajudge FILE_OR_DIR...   (a JSON object, array or List per file; *.json of a directory)
//	kumajudge -                (the same from standard input)
//
// It prints "ok <name>" or "invalid <name>: <errors>" per route and exits 1 if any route
// is invalid, 2 if the input cannot be read or holds no route.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/coalmine-dev/coalmine/e2e/kumajudge"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kumajudge FILE_OR_DIR... | -")
		os.Exit(2)
	}
	var routes []kumajudge.Route
	for _, arg := range os.Args[1:] {
		var (
			rs  []kumajudge.Route
			err error
		)
		if arg == "-" {
			var data []byte
			if data, err = io.ReadAll(os.Stdin); err == nil {
				rs, err = kumajudge.Parse(data)
			}
		} else {
			rs, err = kumajudge.Load(arg)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "kumajudge: read %s: %v\n", arg, err)
			os.Exit(2)
		}
		routes = append(routes, rs...)
	}
	if len(routes) == 0 {
		fmt.Fprintln(os.Stderr, "kumajudge: no TrafficRoute found")
		os.Exit(2)
	}
	invalid := 0
	for _, r := range routes {
		v := kumajudge.Judge(r)
		fmt.Println(v)
		if !v.OK() {
			invalid++
		}
	}
	if invalid > 0 {
		fmt.Fprintf(os.Stderr, "kumajudge: %d of %d routes invalid\n", invalid, len(routes))
		os.Exit(1)
	}
}
