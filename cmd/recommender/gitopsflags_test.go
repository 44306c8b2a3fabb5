package main

import (
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/recommender/recommender/pkg/gitops"
)

// Ensure that the flags land in the fields named after them.
func TestGitOpsFlags(t *testing.T) {
	cfg := gitops.DefaultConfig()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	addGitOpsFlags(fs, &cfg)
	err := fs.Parse([]string{
		"--git-url=https://github.com/acme/policies.git", "--git-branch=prod", "--git-path=clusters/a",
		"--git-token-file=/run/secrets/git", "--git-author=Bot <bot@example.com>", "--github-repo=acme/policies",
		"--github-token-file=/run/secrets/gh", "--github-api-url=https://ghe.example.com/", "--git-only", "--pr-interval=1h",
		"--git-work-dir=/var/lib/recommender/git", "--git-timeout=30s",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := gitops.Config{
		GitURL: "https://github.com/acme/policies.git", GitBranch: "prod", GitPath: "clusters/a", GitTokenFile: "/run/secrets/git",
		GitAuthor: "Bot <bot@example.com>", GitHubRepo: "acme/policies", GitHubTokenFile: "/run/secrets/gh",
		GitHubAPIURL: "https://ghe.example.com/", GitOnly: true, PRInterval: time.Hour, GitWorkDir: "/var/lib/recommender/git",
		GitTimeout: 30 * time.Second,
	}
	if cfg != want {
		t.Errorf("parsed %+v, want %+v", cfg, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate = %v", err)
	}
}
