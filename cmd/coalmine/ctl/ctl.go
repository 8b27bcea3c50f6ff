// Package ctl is coalmine's operator command line: `coalmine status|promote|abort|retry|
// pause|resume`, the same code as the kubectl plugin `kubectl coalmine ...`
// (cmd/kubectl-coalmine).
//
// The commands act through the Canary alone: status reads it, the others set the
// annotation coalmine.dev/command by a merge patch and wait, bounded, until the
// progression loop has carried the command out and removed the annotation, then print the
// Event that records it. Who asked is stamped by coalmine's Canary webhook from the
// authenticated request; the commands never write it. The RBAC they need is the
// ClusterRole coalmine-operator (manifests/rbac/operator.yaml).
//
// `coalmine migrate` is the exception, a platform engineer's one-off: it moves an app
// from Flagger to coalmine (migrate.go), so it deletes and scales objects and needs the
// rights of whoever installed Flagger's Canaries.
package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1 // the command failed, was refused, or did not complete in time
	exitUsage   = 2
	programName = "coalmine"
)

// IO is where a command reads its environment and writes its output. The zero value is
// not usable; Main fills it from the process.
type IO struct {
	Out, Err io.Writer
	// Terminal says Out is a terminal: status --watch redraws and uses colours.
	Terminal bool
	// Color allows ANSI colours on a terminal (NO_COLOR unset).
	Color bool
}

// Commands are the names Main serves; cmd/coalmine hands them to Main.
var Commands = append([]string{"status", "migrate"}, v1beta1.Commands...)

// IsCommand reports whether name is one of the operator commands (or help).
func IsCommand(name string) bool {
	return slices.Contains(Commands, name) || name == "help"
}

// Main runs an operator command, args[0] being its name (status, promote, ...), and
// returns the process exit code. prog is how the user called it: "coalmine" or
// "kubectl coalmine".
func Main(ctx context.Context, prog string, args []string) int {
	term := isTerminal(os.Stdout)
	return Run(ctx, prog, args, IO{Out: os.Stdout, Err: os.Stderr, Terminal: term, Color: term && os.Getenv("NO_COLOR") == ""})
}

// Run is Main with the output given: tests call it.
func Run(ctx context.Context, prog string, args []string, io IO) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(io.Err, prog)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	name, rest := args[0], args[1:]
	var err error
	switch {
	case name == "status":
		err = runStatus(ctx, prog, rest, io)
	case name == "migrate":
		err = runMigrate(ctx, prog, rest, io)
	case slices.Contains(v1beta1.Commands, name):
		err = runCommand(ctx, prog, name, rest, io)
	default:
		fmt.Fprintf(io.Err, "%s: unknown command %q\n\n", prog, name)
		usage(io.Err, prog)
		return exitUsage
	}
	var u usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, pflag.ErrHelp):
		return exitOK
	case errors.As(err, &u):
		fmt.Fprintf(io.Err, "%s %s: %v\nRun '%s %s --help' for usage.\n", prog, name, err, prog, name)
		return exitUsage
	case errors.Is(err, errReported):
		return exitFailed
	default:
		fmt.Fprintf(io.Err, "%s %s: %v\n", prog, name, err)
		return exitFailed
	}
}

// usageError is a wrong invocation: exit code 2 with a hint.
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// errReported: the command failed and has said why already.
var errReported = errors.New("reported")

func usage(w io.Writer, prog string) {
	fmt.Fprintf(w, `Operate coalmine's canary rollouts.

Usage:
  %[1]s status  [-n NAMESPACE | -A] [NAME] [--watch]   phase, weight, metrics against thresholds
  %[1]s promote [-n NAMESPACE] NAME                  skip the remaining steps and promote now
  %[1]s abort   [-n NAMESPACE] NAME                  roll the revision under analysis back now
  %[1]s retry   [-n NAMESPACE] NAME                  analyse the failed revision again
  %[1]s pause   [-n NAMESPACE] NAME                  hold the analysis at the current weight
  %[1]s resume  [-n NAMESPACE] NAME                  continue a paused analysis
  %[1]s migrate [-n NAMESPACE] NAME                  hand an app Flagger initialised over to coalmine

The commands set the annotation %[2]s on the Canary; coalmine carries it out
once, records an Event naming who asked (from the authenticated request) and removes
the annotation. They wait for that (--timeout) and print the outcome.

Flags of every command:
  --kubeconfig FILE, --context NAME, -n/--namespace NS, --as USER, --as-group GROUP
Permissions: ClusterRole coalmine-operator (bind it to the people on call).
Run '%[1]s COMMAND --help' for a command's flags.
`, prog, v1beta1.AnnotationCommand)
}

// newFlagSet is a flag set with the connection flags every command takes. Flags may
// follow the arguments, as with kubectl.
func newFlagSet(prog, name string, io IO, conn *connection) *pflag.FlagSet {
	fs := pflag.NewFlagSet(prog+" "+name, pflag.ContinueOnError)
	fs.SetOutput(io.Err)
	fs.SortFlags = false
	conn.bindFlags(fs)
	return fs
}

// parseOne parses the flags of a command that acts on one Canary, takes its NAME and
// connects: the client and the namespace to act in.
func parseOne(fs *pflag.FlagSet, args []string, conn *connection, io IO) (string, client.WithWatch, string, error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return "", nil, "", err
		}
		return "", nil, "", usageError{err}
	}
	name, err := oneName(fs.Args())
	if err != nil {
		return "", nil, "", err
	}
	cl, ns, err := conn.client(io)
	if err != nil {
		return "", nil, "", err
	}
	return name, cl, ns, nil
}

// oneName is the single NAME argument of a command.
func oneName(args []string) (string, error) {
	switch len(args) {
	case 1:
		if strings.TrimSpace(args[0]) == "" {
			return "", usagef("the Canary name is empty")
		}
		return args[0], nil
	case 0:
		return "", usagef("which Canary? give its name")
	default:
		return "", usagef("one Canary at a time, got %d names: %s", len(args), strings.Join(args, " "))
	}
}
