package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchcli:", err)
		os.Exit(1)
	}
}

func run(args []string, w io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: benchcli RAW.txt [RAW.txt ...]")
	}
	res := newResults()
	for _, path := range args {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		err = res.parse(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return render(w, res)
}
