// Command eval prints how well learned policies hold on the generated week (issue 14): false
// denies on held-out days, attacks allowed, and allowed over observed tuples. `make eval` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/recommender/recommender/internal/eval"
)

func main() {
	verbose := flag.Bool("v", false, "also list the allowed tuples that were never observed")
	flag.Parse()
	rs, err := eval.Run(context.Background(), eval.Cases())
	if err == nil {
		err = eval.WriteTable(os.Stdout, rs, *verbose)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "eval:", err)
		os.Exit(1)
	}
}
