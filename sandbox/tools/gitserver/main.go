// Command gitserver serves the bare Git repositories under -root over smart HTTP on a
// loopback port, with Flux's test Git server (github.com/fluxcd/pkg/gittestserver): what
// the sandbox's source-controller clones from. A push to a repository that does not
// exist creates it. It prints "gitserver: serving <root> at <url>" and writes the URL to
// -url-file (when set) once it accepts connections, then serves until SIGTERM or SIGINT.
//
// It is a program, not a library the tests import, so Flux's Git stack stays out of
// coalmine's go.mod and `make demo` can run it as it runs the other sandbox parts.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/fluxcd/pkg/gittestserver"
)

func main() {
	root := flag.String("root", "", "directory holding the bare repositories (<name>.git); created if missing")
	urlFile := flag.String("url-file", "", "file to write the server's base URL to once it serves")
	flag.Parse()
	if *root == "" {
		fmt.Fprintln(os.Stderr, "gitserver: -root is required")
		os.Exit(2)
	}
	if err := os.MkdirAll(*root, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "gitserver:", err)
		os.Exit(1)
	}
	srv := gittestserver.NewGitServer(*root).AutoCreate()
	// httptest's server: 127.0.0.1 on a port the kernel picks, so two sandboxes never
	// collide and nothing outside this machine can reach it.
	if err := srv.StartHTTP(); err != nil {
		fmt.Fprintln(os.Stderr, "gitserver: start:", err)
		os.Exit(1)
	}
	defer srv.StopHTTP()
	url := srv.HTTPAddress()
	if *urlFile != "" {
		tmp := *urlFile + ".tmp"
		err := os.WriteFile(tmp, []byte(url+"\n"), 0o644)
		if err == nil {
			err = os.Rename(tmp, *urlFile)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "gitserver: write -url-file:", err)
			os.Exit(1)
		}
	}
	fmt.Printf("gitserver: serving %s at %s\n", srv.Root(), url)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
