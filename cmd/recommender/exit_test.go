package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recommender/recommender/internal/k8stest"
)

// envMainArgs makes the test binary run the command line it holds (one argument per line)
// as the real binary would: main's run, signals and exit status included.
const envMainArgs = "RECOMMENDER_TEST_MAIN_ARGS"

func TestMain(m *testing.M) {
	if args, ok := os.LookupEnv(envMainArgs); ok {
		os.Exit(run(context.Background(), strings.Split(args, "\n"), os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(k8stest.Main(m, &kube))
}

// kube is the real kube-apiserver of the tests that connect `run` to a cluster
// (RECOMMENDER_K8S=1); the others ignore it.
var kube *k8stest.Cluster

// Ensure the exit status is decided by the error's type: findings (alone, wrapped or joined)
// are 1, anything else is 2, even joined with a finding.
func TestExitCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"success", nil, exitOK},
		{"diff", errDiffers, exitFindings},
		{"wrapped", fmt.Errorf("3 flows in 2 groups: %w", errWouldDeny), exitFindings},
		{"joined findings", errors.Join(fmt.Errorf("x: %w", errWouldDeny), fmt.Errorf("y: %w", errUnevaluable)), exitFindings},
		{"runtime error", fs.ErrNotExist, exitError},
		{"finding and runtime error", errors.Join(errWouldDeny, fs.ErrNotExist), exitError},
		{"runtime error naming a finding", fmt.Errorf("%w: %w", errUnevaluable, fs.ErrNotExist), exitError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := exitCode(tt.err); got != tt.want {
				t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
			}
		})
	}
}

// Ensure the CLI contract of the README (Exit status) holds for real command lines: 0
// success, 1 findings, 2 usage or runtime errors; findings already on stdout are not
// repeated on stderr.
func TestExitStatusContract(t *testing.T) {
	flowsGlob, err := filepath.Glob("../../testdata/flows/*.jsonl")
	if err != nil || len(flowsGlob) < 2 {
		t.Fatalf("glob: %v %v", flowsGlob, err)
	}
	old, same := t.TempDir(), t.TempDir()
	for _, dir := range []string{old, same} {
		if code := run(t.Context(), []string{"recommend", "--flows", testRecording, "--out", dir, "--log-level", "error"}, nil, &bytes.Buffer{}, &bytes.Buffer{}); code != exitOK {
			t.Fatalf("recommend exit %d", code)
		}
	}
	changed := t.TempDir()
	if code := run(t.Context(), append([]string{"recommend", "--out", changed, "--log-level", "error", "--flows"}, flowsGlob...), nil, &bytes.Buffer{}, &bytes.Buffer{}); code != exitOK {
		t.Fatalf("recommend of a glob: exit %d", code)
	}
	db := filepath.Join(t.TempDir(), "r.db")
	tests := []struct {
		name       string
		args       []string
		want       int
		wantStderr string // "" : nothing
	}{
		{"diff equal", []string{"diff", "--old", old, "--new", same}, exitOK, ""},
		{"diff differs", []string{"diff", "--old", old, "--new", changed}, exitFindings, ""},
		{"check passes", []string{"check", "--flows", checkFlows, "--policies", "testdata/check/open"}, exitOK, ""},
		{"check would deny", []string{"check", "--flows", checkFlows, "--policies", checkPolicies}, exitFindings, ""},
		{"check rejected documents", []string{"check", "--flows", "testdata/shapes/dropped.jsonl", "--policies", "testdata/shapes/rejected"}, exitFindings, "policy documents could not be evaluated"},
		{"check usage", []string{"check", "--flows", checkFlows}, exitError, "--policies is required"},
		{"unknown flag", []string{"status", "--no-such-flag"}, exitError, "unknown flag"},
		{"bad -o", []string{"status", "--db", db, "-o", "text"}, exitError, "want table or json"},
		{"stray argument", []string{"status", "--db", db, "extra"}, exitError, "unknown command"},
		{"missing recording", []string{"ingest", "--db", db, "--flows", "no-such.jsonl"}, exitError, "no-such.jsonl"},
		{"ingest a glob", append([]string{"ingest", "--db", db, "--flows"}, flowsGlob...), exitOK, ""},
		{"flows a glob", append([]string{"flows", "-o", "json", "--flows"}, flowsGlob...), exitOK, ""},
		{"check a glob", append([]string{"check", "--policies", "testdata/check/open", "--flows"}, flowsGlob...), exitOK, ""},
		{"arguments without --flows", []string{"ingest", "--db", db, testRecording}, exitError, "recordings go after --flows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			got := run(t.Context(), append(tt.args, "--log-level", "error"), nil, &stdout, &stderr)
			if got != tt.want {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", got, tt.want, stdout.String(), stderr.String())
			}
			msg := ""
			for _, l := range strings.Split(stderr.String(), "\n") {
				if strings.HasPrefix(l, "recommender: ") {
					msg += l
				}
			}
			if (tt.wantStderr == "") != (msg == "") || !strings.Contains(msg, tt.wantStderr) {
				t.Errorf("error message %q, want one containing %q", msg, tt.wantStderr)
			}
		})
	}
}

// Ensure SIGTERM ends a command blocked reading a quiet stdin (sleep 30 | recommender ingest
// --flows -) at once, committing what it read and exiting 0, as the binary does.
func TestSIGTERMEndsQuietStdin(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "r.db")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close() // open and silent until the end: the child's read never returns by itself
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envMainArgs+"="+strings.Join([]string{"ingest", "--flows", "-", "--db", db, "--log-level", "error"}, "\n"))
	cmd.Stdin = pr
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pr.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	// Ready: ingest opens the store after it installed its signal handler, then reads stdin.
	for {
		if _, err := os.Stat(db); err == nil {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("ingest exited before reading stdin: %v\n%s", err, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("ingest after SIGTERM: %v\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(time.Minute): // generous: without the fix it never ends
		cmd.Process.Kill()
		t.Fatalf("ingest still blocked on stdin a minute after SIGTERM")
	}
	if !strings.Contains(stdout.String(), "ingested 0 flows") {
		t.Errorf("stdout:\n%s\nwant the ingest summary", stdout.String())
	}
}

// Ensure SIGTERM ends every command that reads flows from a quiet stdin, however it reads
// them (the ingester's reader, or the command's own loop): the read is not waited for.
// Interrupted reports (check, recommend) are errors, not a pass; flows and ingest stop cleanly.
func TestSIGTERMEndsStdinReaders(t *testing.T) {
	tests := []struct {
		args []string
		want int
	}{
		{[]string{"ingest", "--db", filepath.Join(t.TempDir(), "r.db")}, exitOK},
		{[]string{"flows"}, exitOK},
		{[]string{"check", "--policies", "testdata/check/open"}, exitError},
		{[]string{"recommend", "--out", t.TempDir()}, exitError},
	}
	for _, tt := range tests {
		t.Run(tt.args[0], func(t *testing.T) {
			pr, pw := io.Pipe()
			defer pw.Close()
			code := make(chan int, 1)
			go func() {
				code <- run(t.Context(), append(tt.args, "--flows", "-", "--log-level", "error"), pr, &bytes.Buffer{}, &bytes.Buffer{})
			}()
			// Ready: a write to an io.Pipe returns once the command has read it, and commands
			// install their signal handler before they open the source.
			if _, err := pw.Write([]byte("{")); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case got := <-code:
				if got != tt.want {
					t.Errorf("exit %d after SIGTERM, want %d", got, tt.want)
				}
			case <-time.After(time.Minute): // generous: without the fix it never ends
				t.Fatal("still reading stdin a minute after SIGTERM")
			}
		})
	}
}
