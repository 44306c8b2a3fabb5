package gitops

import (
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	valid := func(mod func(*Config)) Config {
		c := DefaultConfig()
		c.GitURL = "https://github.com/acme/policies.git"
		c.GitTokenFile = "/run/secrets/git"
		c.GitHubRepo = "acme/policies"
		c.GitHubTokenFile = "/run/secrets/gh"
		if mod != nil {
			mod(&c)
		}
		return c
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // substring of the error; empty for valid
	}{
		{"valid", valid(nil), ""},
		{"disabled", DefaultConfig(), ""},
		{"github repo without url", func() Config { c := DefaultConfig(); c.GitHubRepo = "a/b"; return c }(), "--git-url is required"},
		{"git only needs no github", valid(func(c *Config) { c.GitOnly, c.GitHubRepo, c.GitHubTokenFile = true, "", "" }), ""},
		{"ssh scp-like", valid(func(c *Config) { c.GitURL, c.GitTokenFile, c.GitSSHKeyFile = "git@github.com:acme/p.git", "", "/k" }), ""},
		{"token and key", valid(func(c *Config) { c.GitSSHKeyFile = "/k" }), "mutually exclusive"},
		{"token over ssh", valid(func(c *Config) { c.GitURL = "ssh://git@github.com/acme/p.git" }), "--git-token-file needs an http(s)"},
		{"key over https", valid(func(c *Config) { c.GitTokenFile, c.GitSSHKeyFile = "", "/k" }), "need an ssh"},
		{"credentials in url", valid(func(c *Config) { c.GitURL = "https://x:s3cret@github.com/acme/p.git" }), "credentials in the URL"},
		{"absolute path", valid(func(c *Config) { c.GitPath = "/policies" }), "--git-path"},
		{"path escapes", valid(func(c *Config) { c.GitPath = "a/../../b" }), "--git-path"},
		{"bad author", valid(func(c *Config) { c.GitAuthor = "bot" }), "--git-author"},
		{"our own branch as base", valid(func(c *Config) { c.GitBranch = "recommender/proposals" }), "--git-branch"},
		{"bad repo", valid(func(c *Config) { c.GitHubRepo = "acme" }), "--github-repo"},
		{"missing github token", valid(func(c *Config) { c.GitHubTokenFile = "" }), "--github-token-file is required"},
		{"bad api url", valid(func(c *Config) { c.GitHubAPIURL = "ghe.example.com" }), "--github-api-url"},
		{"negative interval", valid(func(c *Config) { c.PRInterval = -time.Second }), "--pr-interval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("Validate = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate = %v, want an error containing %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Errorf("Validate error leaks the password: %v", err)
			}
		})
	}
}

// Ensure that the start-up line never prints a secret.
func TestConfigStringRedacts(t *testing.T) {
	cfg := DefaultConfig()
	cfg.GitURL = "https://bot:s3cret@github.com/acme/policies.git"
	cfg.GitHubAPIURL = "https://user:t0ken@ghe.example.com/"
	cfg.GitTokenFile = "/run/secrets/git-token"
	s := cfg.String()
	for _, secret := range []string{"s3cret", "t0ken"} {
		if strings.Contains(s, secret) {
			t.Errorf("String() = %q leaks %q", s, secret)
		}
	}
	for _, want := range []string{"git-url=https://REDACTED@github.com/acme/policies.git", "git-token-file=/run/secrets/git-token"} {
		if !strings.Contains(s, want) {
			t.Errorf("String() = %q lacks %q", s, want)
		}
	}
}

func TestCompareURL(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"github repo", Config{GitHubRepo: "acme/policies", GitBranch: "main", GitURL: "git@elsewhere:x/y.git"},
			"https://github.com/acme/policies/compare/main...recommender/proposals"},
		{"enterprise", Config{GitHubRepo: "acme/policies", GitBranch: "main", GitHubAPIURL: "https://ghe.example.com/api/v3/"},
			"https://ghe.example.com/acme/policies/compare/main...recommender/proposals"},
		{"https remote", Config{GitURL: "https://gitlab.example.com/team/policies.git", GitBranch: "prod"},
			"https://gitlab.example.com/team/policies/compare/prod...recommender/proposals"},
		{"scp remote", Config{GitURL: "git@github.com:acme/policies.git", GitBranch: "main"},
			"https://github.com/acme/policies/compare/main...recommender/proposals"},
		{"ssh remote with port", Config{GitURL: "ssh://git@git.example.com:2222/acme/policies.git", GitBranch: "main"},
			"https://git.example.com/acme/policies/compare/main...recommender/proposals"},
		{"local remote", Config{GitURL: "/srv/git/policies.git", GitBranch: "main"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := compareURL(&tc.cfg, ProposalsBranch); got != tc.want {
				t.Errorf("compareURL = %q, want %q", got, tc.want)
			}
		})
	}
}

// Ensure that the SSH command pins the key and host checking, quoted for the shell.
func TestSSHCommand(t *testing.T) {
	cfg := Config{GitURL: "git@github.com:acme/policies.git", GitSSHKeyFile: t.TempDir() + "/key's"}
	if err := writeFile(cfg.GitSSHKeyFile, "KEY"); err != nil {
		t.Fatal(err)
	}
	a, err := loadGitAuth(&cfg, "/home/x")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"-i '" + strings.ReplaceAll(cfg.GitSSHKeyFile, "'", `'\''`) + "'", "IdentitiesOnly=yes",
		"StrictHostKeyChecking=accept-new", "UserKnownHostsFile='/home/x/known_hosts'", "BatchMode=yes"} {
		if !strings.Contains(a.sshCmd, want) {
			t.Errorf("ssh command %q lacks %q", a.sshCmd, want)
		}
	}
	cfg.GitKnownHostsFile = "/etc/ssh/known_hosts"
	a, _ = loadGitAuth(&cfg, "/home/x")
	if !strings.Contains(a.sshCmd, "StrictHostKeyChecking=yes -o UserKnownHostsFile='/etc/ssh/known_hosts'") {
		t.Errorf("ssh command %q does not pin the known_hosts file", a.sshCmd)
	}
}
