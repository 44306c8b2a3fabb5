package main

import (
	"github.com/spf13/pflag"

	"github.com/recommender/recommender/pkg/gitops"
)

// addGitOpsFlags registers the GitOps flags on fs with c's current values as defaults. The
// flag names are gitops' own constants: its errors name them.
func addGitOpsFlags(fs *pflag.FlagSet, c *gitops.Config) {
	fs.StringVar(&c.GitURL, gitops.FlagGitURL, c.GitURL, "policy repository URL (https, ssh or scp-like); empty disables GitOps delivery")
	fs.StringVar(&c.GitBranch, gitops.FlagGitBranch, c.GitBranch, "base branch of the policy repository")
	fs.StringVar(&c.GitPath, gitops.FlagGitPath, c.GitPath, "directory inside the repository that holds audit/ and enforced/")
	fs.StringVar(&c.GitTokenFile, gitops.FlagGitTokenFile, c.GitTokenFile, "file holding a token for HTTPS git access")
	fs.StringVar(&c.GitSSHKeyFile, gitops.FlagGitSSHKeyFile, c.GitSSHKeyFile, "file holding a private key for SSH git access")
	fs.StringVar(&c.GitKnownHostsFile, gitops.FlagGitKnownHostsFile, c.GitKnownHostsFile, "SSH known_hosts file; without it unknown host keys are accepted on first use")
	fs.StringVar(&c.GitAuthor, gitops.FlagGitAuthor, c.GitAuthor, `commit author, "Name <email>"`)
	fs.StringVar(&c.GitWorkDir, gitops.FlagGitWorkDir, c.GitWorkDir, "directory for the working clone; empty means a temporary directory")
	fs.DurationVar(&c.GitTimeout, gitops.FlagGitTimeout, c.GitTimeout, "timeout of each git network operation and GitHub API call")
	fs.StringVar(&c.GitHubRepo, gitops.FlagGitHubRepo, c.GitHubRepo, "GitHub repository (owner/name) to open pull requests in")
	fs.StringVar(&c.GitHubTokenFile, gitops.FlagGitHubTokenFile, c.GitHubTokenFile, "file holding the GitHub API token")
	fs.StringVar(&c.GitHubAPIURL, gitops.FlagGitHubAPIURL, c.GitHubAPIURL, "GitHub Enterprise base URL (https://ghe.example.com/); empty means github.com")
	fs.BoolVar(&c.GitOnly, gitops.FlagGitOnly, c.GitOnly, "push branches and print compare URLs instead of opening pull requests")
	fs.DurationVar(&c.PRInterval, gitops.FlagPRInterval, c.PRInterval, "least time between two pull request updates")
}
