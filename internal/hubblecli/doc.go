// Package hubblecli finds the real hubble CLI for tests that prove the replay relay speaks
// the same Observer API as Hubble Relay. build.sh builds the CLI from the Go module proxy
// (cilium v1.20.2) and caches it; Path finds it or skips the test (fails under CI=true).
// It is a test helper only: nothing outside _test.go files imports it.
package hubblecli
