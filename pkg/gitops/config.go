package gitops

import (
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"path"
	"strings"
	"time"
)

// Flag names; the Config fields below carry the same names.
const (
	FlagGitURL            = "git-url"
	FlagGitBranch         = "git-branch"
	FlagGitPath           = "git-path"
	FlagGitTokenFile      = "git-token-file"
	FlagGitSSHKeyFile     = "git-ssh-key-file"
	FlagGitKnownHostsFile = "git-known-hosts-file"
	FlagGitAuthor         = "git-author"
	FlagGitWorkDir        = "git-work-dir"
	FlagGitTimeout        = "git-timeout"
	FlagGitHubRepo        = "github-repo"
	FlagGitHubTokenFile   = "github-token-file"
	FlagGitHubAPIURL      = "github-api-url"
	FlagGitOnly           = "git-only"
	FlagPRInterval        = "pr-interval"
)

// Config configures GitOps delivery. GitOps is off when GitURL is empty.
// Secrets are never flag values: tokens and keys are read from the files named here, at each use,
// so a rotated Kubernetes secret is picked up without a restart.
type Config struct {
	// GitURL is the policy repository: https://host/owner/repo.git, ssh://git@host/owner/repo.git,
	// git@host:owner/repo.git, or a local path (tests).
	GitURL string
	// GitBranch is the base branch pull requests target.
	GitBranch string
	// GitPath is the directory inside the repository holding audit/ and enforced/.
	GitPath string
	// GitTokenFile holds a token for HTTPS git access (a GitHub token works).
	GitTokenFile string
	// GitSSHKeyFile holds a private key for SSH git access.
	GitSSHKeyFile string
	// GitKnownHostsFile pins SSH host keys; without it unknown hosts are accepted on first use.
	GitKnownHostsFile string
	// GitAuthor is "Name <email>" for commits.
	GitAuthor string
	// GitWorkDir keeps the clone between cycles; empty means a temporary directory.
	GitWorkDir string
	// GitTimeout bounds each git network operation and each GitHub API call.
	GitTimeout time.Duration
	// GitHubRepo is owner/name of the repository pull requests are opened in.
	GitHubRepo string
	// GitHubTokenFile holds the GitHub API token (sent as "Authorization: Bearer").
	GitHubTokenFile string
	// GitHubAPIURL is a GitHub Enterprise base URL (https://ghe.example.com/); empty means github.com.
	GitHubAPIURL string
	// GitOnly pushes branches and reports compare URLs instead of opening pull requests.
	GitOnly bool
	// PRInterval is the least time between two publications (pushes and PR updates).
	PRInterval time.Duration
}

// DefaultConfig returns the flag defaults.
func DefaultConfig() Config {
	return Config{
		GitBranch:  "main",
		GitPath:    "policies",
		GitAuthor:  "recommender <recommender@users.noreply.github.com>",
		GitTimeout: 2 * time.Minute,
		PRInterval: 15 * time.Minute,
	}
}

// Enabled reports whether GitOps delivery is configured.
func (c *Config) Enabled() bool { return c.GitURL != "" }

// Validate checks the flags for consistency without touching disk or network.
// A disabled Config is valid only if no other GitOps flag asks for delivery.
func (c *Config) Validate() error {
	if !c.Enabled() {
		if c.GitHubRepo != "" || c.GitOnly {
			return fmt.Errorf("--%s is required with --%s or --%s", FlagGitURL, FlagGitHubRepo, FlagGitOnly)
		}
		return nil
	}
	var errs []error
	kind, err := remoteKind(c.GitURL)
	if err != nil {
		errs = append(errs, fmt.Errorf("--%s: %w", FlagGitURL, err))
	}
	if c.GitTokenFile != "" && c.GitSSHKeyFile != "" {
		errs = append(errs, fmt.Errorf("--%s and --%s are mutually exclusive", FlagGitTokenFile, FlagGitSSHKeyFile))
	}
	if c.GitTokenFile != "" && kind != remoteHTTP && err == nil {
		errs = append(errs, fmt.Errorf("--%s needs an http(s) --%s", FlagGitTokenFile, FlagGitURL))
	}
	if (c.GitSSHKeyFile != "" || c.GitKnownHostsFile != "") && kind != remoteSSH && err == nil {
		errs = append(errs, fmt.Errorf("--%s and --%s need an ssh --%s", FlagGitSSHKeyFile, FlagGitKnownHostsFile, FlagGitURL))
	}
	if c.GitBranch == "" || strings.HasPrefix(c.GitBranch, "-") || strings.ContainsAny(c.GitBranch, " ~^:?*[\\") ||
		strings.Contains(c.GitBranch, "..") || strings.HasPrefix(c.GitBranch, branchPrefix) {
		errs = append(errs, fmt.Errorf("--%s %q: not a usable branch name", FlagGitBranch, c.GitBranch))
	}
	if p := path.Clean(c.GitPath); c.GitPath == "" || path.IsAbs(c.GitPath) || p == ".." || strings.HasPrefix(p, "../") ||
		strings.HasPrefix(c.GitPath, "-") {
		errs = append(errs, fmt.Errorf("--%s %q: want a relative directory inside the repository", FlagGitPath, c.GitPath))
	}
	if a, err := mail.ParseAddress(c.GitAuthor); err != nil || a.Name == "" {
		errs = append(errs, fmt.Errorf("--%s %q: want \"Name <email>\"", FlagGitAuthor, c.GitAuthor))
	}
	if c.GitTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--%s must be positive", FlagGitTimeout))
	}
	if c.PRInterval < 0 {
		errs = append(errs, fmt.Errorf("--%s must not be negative", FlagPRInterval))
	}
	if c.GitHubRepo != "" {
		if _, _, err := splitRepo(c.GitHubRepo); err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", FlagGitHubRepo, err))
		}
	}
	if c.GitHubAPIURL != "" {
		if u, err := url.Parse(c.GitHubAPIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
			errs = append(errs, fmt.Errorf("--%s %q: want an http(s) URL without credentials", FlagGitHubAPIURL, c.GitHubAPIURL))
		}
	}
	if !c.GitOnly {
		if c.GitHubRepo == "" {
			errs = append(errs, fmt.Errorf("--%s is required unless --%s", FlagGitHubRepo, FlagGitOnly))
		}
		if c.GitHubTokenFile == "" {
			errs = append(errs, fmt.Errorf("--%s is required unless --%s", FlagGitHubTokenFile, FlagGitOnly))
		}
	}
	return errors.Join(errs...)
}

// String prints the configuration for a start-up log line. It holds no secret: tokens and keys are
// only referenced by file name, and a password in --git-url is masked.
func (c Config) String() string {
	return fmt.Sprintf("git-url=%s git-branch=%s git-path=%s git-token-file=%s git-ssh-key-file=%s git-known-hosts-file=%s "+
		"git-author=%q git-work-dir=%s git-timeout=%s github-repo=%s github-token-file=%s github-api-url=%s git-only=%t pr-interval=%s",
		redactURL(c.GitURL), c.GitBranch, c.GitPath, c.GitTokenFile, c.GitSSHKeyFile, c.GitKnownHostsFile,
		c.GitAuthor, c.GitWorkDir, c.GitTimeout, c.GitHubRepo, c.GitHubTokenFile, redactURL(c.GitHubAPIURL), c.GitOnly, c.PRInterval)
}

// remote kinds, as they decide which credential applies.
const (
	remoteLocal = iota
	remoteHTTP
	remoteSSH
)

// scpLike matches git's scp-like syntax, user@host:path.
func scpLike(s string) bool {
	at, colon := strings.Index(s, "@"), strings.Index(s, ":")
	return colon > 0 && !strings.Contains(s[:colon], "/") && at < colon && !strings.Contains(s, "://")
}

// remoteKind classifies a git URL. Credentials inside an http(s) URL are refused: they would show up in
// git's own messages and in process listings; --git-token-file is the place for them.
func remoteKind(raw string) (int, error) {
	if scpLike(raw) {
		return remoteSSH, nil
	}
	if !strings.Contains(raw, "://") {
		return remoteLocal, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return 0, fmt.Errorf("parse %q: %w", redactURL(raw), err)
	}
	switch u.Scheme {
	case "https", "http":
		if u.User != nil {
			return 0, fmt.Errorf("%s: credentials in the URL are not allowed; use --%s", redactURL(raw), FlagGitTokenFile)
		}
		return remoteHTTP, nil
	case "ssh":
		if _, ok := u.User.Password(); ok {
			return 0, fmt.Errorf("%s: passwords in the URL are not allowed; use --%s", redactURL(raw), FlagGitSSHKeyFile)
		}
		return remoteSSH, nil
	case "file":
		return remoteLocal, nil
	}
	return 0, fmt.Errorf("%s: unsupported scheme %q", redactURL(raw), u.Scheme)
}

// redactURL masks user info of a URL, keeping a plain ssh user name (git@).
func redactURL(raw string) string {
	if !strings.Contains(raw, "://") {
		return raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		// An unparsable URL may still hold a secret between "://" and "@".
		if i, j := strings.Index(raw, "://"), strings.LastIndex(raw, "@"); j > i {
			return raw[:i+3] + "REDACTED" + raw[j:]
		}
		return raw
	}
	if u.User == nil {
		return raw
	}
	if _, hasPw := u.User.Password(); !hasPw && u.Scheme == "ssh" {
		return raw
	}
	u.User = url.User("REDACTED")
	return u.String()
}

// splitRepo splits owner/name.
func splitRepo(s string) (owner, name string, err error) {
	owner, name, ok := strings.Cut(s, "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("%q: want owner/name", s)
	}
	return owner, name, nil
}
