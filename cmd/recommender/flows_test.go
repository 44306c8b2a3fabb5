package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
)

const testRecording = "../../testdata/flows/starwars.jsonl"

// runCmd runs the CLI with args and returns stdout and stderr.
func runCmd(ctx context.Context, args ...string) (string, string, error) {
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), errb.String(), err
}

func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// Ensure that `flows` prints the same events from a recording and from `relay` serving it,
// one JSON object per line, with the summary on stderr.
func TestFlowsFileAndRelayAgree(t *testing.T) {
	fromFile, fileSummary, err := runCmd(t.Context(), "flows", "--flows", testRecording, "-o", "json", "--log-level", "error")
	if err != nil {
		t.Fatal(err)
	}

	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(t.Context())
	relayDone := make(chan error, 1)
	go func() {
		_, _, err := runCmd(ctx, "relay", "--flows", testRecording, "--listen", addr, "--log-level", "error")
		relayDone <- err
	}()
	defer func() {
		cancel()
		if err := <-relayDone; err != nil {
			t.Errorf("relay: %v", err)
		}
	}()
	// The relay source retries until the relay command listens.
	fromRelay, relaySummary, err := runCmd(t.Context(), "flows", "--hubble-server", addr, "-o", "json", "--log-level", "error")
	if err != nil {
		t.Fatal(err)
	}
	if fromFile != fromRelay {
		t.Errorf("flows from relay differ from flows from file:\nrelay: %.500s\nfile:  %.500s", fromRelay, fromFile)
	}
	lines := strings.Split(strings.TrimSpace(fromFile), "\n")
	if len(lines) < 100 {
		t.Fatalf("got %d events from %s, want hundreds", len(lines), testRecording)
	}
	for i, l := range lines {
		var ev map[string]any
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("line %d is not a JSON object: %v", i+1, err)
		}
		for _, k := range []string{"kind", "time", "node", "id"} {
			if _, ok := ev[k]; !ok {
				t.Fatalf("line %d lacks %q: %s", i+1, k, l)
			}
		}
	}
	// Both summaries count the same delivered events (skipped may differ: the relay's
	// server-side filter keeps non-policy events off the wire).
	evCount := func(s string) string { return strings.SplitN(s, ",", 2)[0] }
	if !strings.HasPrefix(fileSummary, "events ") || evCount(fileSummary) != evCount(relaySummary) {
		t.Errorf("summaries: file %q, relay %q", fileSummary, relaySummary)
	}
}

// Ensure that the table output has a header and a row per event.
func TestFlowsTable(t *testing.T) {
	out, _, err := runCmd(t.Context(), "flows", "--flows", testRecording, "--log-level", "error")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.HasPrefix(lines[0], "TIME") || len(lines) < 100 {
		t.Fatalf("table starts %q with %d lines", lines[0], len(lines))
	}
}

// Ensure that bad source flags are refused before anything is opened, with the flag named.
func TestFlowsFlagErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"flows", "--flows", testRecording, "--hubble-server", "a:1"}, "--flows and --hubble-server"},
		{[]string{"flows", "--hubble-server", "nohost"}, "--hubble-server"},
		{[]string{"flows", "--strict"}, "--strict"},
		{[]string{"flows", "--flows", testRecording, "-o", "yaml"}, "--output"},
		{[]string{"flows", "--flows", testRecording, "--follow"}, "--follow"},
		{[]string{"relay"}, "--flows"},
		{[]string{"relay", "--flows", testRecording, "--rate", "-1"}, "--rate"},
	}
	for _, tt := range tests {
		_, _, err := runCmd(t.Context(), tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: error %v, want one naming %q", tt.args, err, tt.want)
		}
	}
}

// Ensure that an unreachable relay fails with an error naming its address.
func TestFlowsRelayUnreachable(t *testing.T) {
	addr := freeAddr(t)
	_, _, err := runCmd(t.Context(), "flows", "--hubble-server", addr, "--timeout", "1s", "--log-level", "error")
	if err == nil || !strings.Contains(err.Error(), addr) || errors.Is(err, context.Canceled) {
		t.Fatalf("flows from a closed port: %v, want an error naming %s", err, addr)
	}
}
