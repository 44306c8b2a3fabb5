// Command recommender watches Hubble flows and writes least-privilege Cilium network policy.
package main

import (
	"errors"
	"fmt"
	"os"
)

func main() {
	err := newRootCmd().Execute()
	if err == nil {
		return
	}
	// diff and check report their findings on stdout and signal them by exit code alone.
	if !errors.Is(err, errDiffers) && !errors.Is(err, errWouldDeny) {
		fmt.Fprintln(os.Stderr, "recommender:", err)
	}
	if errors.Is(err, errUnevaluable) && !errors.Is(err, errWouldDeny) {
		os.Exit(2) // check: some policies were not evaluated, the rest passed
	}
	os.Exit(1)
}
