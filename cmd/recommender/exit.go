package main

import (
	"context"
	"fmt"
	"io"
)

// The exit status of every command (README, "Exit status"):
const (
	exitOK       = 0 // success
	exitFindings = 1 // the command ran and found something: check, flows it would deny or documents it could not evaluate; diff, policies that differ
	exitError    = 2 // a usage error (flags, arguments) or a runtime error (I/O, a server)
)

// finding is the error type of a result the command reports rather than a failure: main exits
// with exitFindings for it. The report itself is on stdout (and stderr for check's rejected
// documents), so the quiet findings are not printed again.
type finding struct {
	msg   string
	quiet bool // the output already says it all (diff(1) prints nothing more)
}

func (f *finding) Error() string { return f.msg }

var (
	// errDiffers is returned by diff when the policy sets differ.
	errDiffers error = &finding{msg: "policies differ", quiet: true}
	// errWouldDeny is returned by check when the policies would deny some of the flows; the
	// command's output lists them.
	errWouldDeny error = &finding{msg: "policies would deny observed flows", quiet: true}
	// errUnevaluable is returned by check when some policy documents were rejected (each is
	// listed on stderr with file, document and field) and the rest were evaluated.
	errUnevaluable error = &finding{msg: "policy documents could not be evaluated"}
)

// exitCode maps a command's error to its exit status: findings are 1 only when every error
// joined in err is a finding; anything else (a usage or runtime error) is 2.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	if allFindings(err) {
		return exitFindings
	}
	return exitError
}

// allFindings reports whether err is made of findings only (errors.Join trees included).
func allFindings(err error) bool {
	switch e := err.(type) {
	case *finding:
		return true
	case interface{ Unwrap() []error }:
		for _, c := range e.Unwrap() {
			if !allFindings(c) {
				return false
			}
		}
		return len(e.Unwrap()) > 0
	case interface{ Unwrap() error }:
		return allFindings(e.Unwrap())
	}
	return false
}

// quiet reports whether err needs no message: every finding in it is already in the output.
func quiet(err error) bool {
	switch e := err.(type) {
	case *finding:
		return e.quiet
	case interface{ Unwrap() []error }:
		for _, c := range e.Unwrap() {
			if !quiet(c) {
				return false
			}
		}
		return true
	case interface{ Unwrap() error }:
		return quiet(e.Unwrap())
	}
	return false
}

// run executes one command line and returns its exit status; main only exits with it.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err != nil && !quiet(err) {
		fmt.Fprintln(stderr, "recommender:", err)
	}
	return exitCode(err)
}
