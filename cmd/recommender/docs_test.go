package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

var update = flag.Bool("update", false, "rewrite docs/flags.md from the CLI")

// renderFlags writes the configuration reference: every command, its synopsis and its flags,
// straight from the cobra tree so the document cannot drift from the binary.
func renderFlags(root *cobra.Command) string {
	var b strings.Builder
	b.WriteString("# Configuration reference\n\n")
	b.WriteString("Generated from the CLI by `make docs` (`go test ./cmd/recommender -run TestFlagsDoc -update`); a test fails when it is stale.\n")
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			return
		}
		fmt.Fprintf(&b, "\n## `%s`\n\n%s\n", c.CommandPath(), c.Short)
		if c.Runnable() {
			fmt.Fprintf(&b, "\n```\n%s\n```\n", c.UseLine())
		}
		fs := c.NonInheritedFlags()
		if fs.HasAvailableFlags() {
			b.WriteString("\n| flag | default | description |\n|---|---|---|\n")
			fs.VisitAll(func(f *pflag.Flag) {
				if f.Hidden {
					return
				}
				name := "--" + f.Name
				if f.Shorthand != "" {
					name = "-" + f.Shorthand + ", " + name
				}
				def := f.DefValue
				if def == "[]" || def == "" {
					def = ""
				} else {
					def = "`" + def + "`"
				}
				fmt.Fprintf(&b, "| `%s` | %s | %s |\n", name, def, strings.ReplaceAll(f.Usage, "|", `\|`))
			})
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	return b.String()
}

// Ensure docs/flags.md matches the flags the binary really has.
func TestFlagsDocUpToDate(t *testing.T) {
	got := renderFlags(newRootCmd())
	const path = "../../docs/flags.md"
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v (run `make docs`)", path, err)
	}
	if !bytes.Equal([]byte(got), want) {
		t.Errorf("%s is stale: run `make docs`", path)
	}
}
