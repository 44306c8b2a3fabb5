package gitops

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// gitCmd runs the git binary in one work tree with a clean environment. The environment holds the
// credentials; the command line never does, because command lines show up in process listings and logs.
type gitCmd struct {
	dir     string
	env     []string
	secrets []string // scrubbed from every error message
	log     *slog.Logger
}

// gitAuth is the credential material for one run, read from the configured files.
type gitAuth struct {
	token   string // HTTPS token
	sshCmd  string // GIT_SSH_COMMAND
	urlBase string // scheme://host/ the token is sent to
}

// loadGitAuth reads the credential files named in cfg. homeDir receives the known_hosts file written by
// accept-new when no --git-known-hosts-file is given.
func loadGitAuth(cfg *Config, homeDir string) (gitAuth, error) {
	var a gitAuth
	if cfg.GitTokenFile != "" {
		tok, err := readSecret(cfg.GitTokenFile)
		if err != nil {
			return a, fmt.Errorf("read --%s: %w", FlagGitTokenFile, err)
		}
		u, err := url.Parse(cfg.GitURL)
		if err != nil {
			return a, fmt.Errorf("parse --%s: %w", FlagGitURL, err)
		}
		a.token = tok
		a.urlBase = u.Scheme + "://" + u.Host + "/"
	}
	if kind, _ := remoteKind(cfg.GitURL); kind == remoteSSH {
		ssh := []string{"ssh", "-o", "BatchMode=yes"}
		if cfg.GitSSHKeyFile != "" {
			if _, err := os.Stat(cfg.GitSSHKeyFile); err != nil {
				return a, fmt.Errorf("read --%s: %w", FlagGitSSHKeyFile, err)
			}
			ssh = append(ssh, "-i", shellQuote(cfg.GitSSHKeyFile), "-o", "IdentitiesOnly=yes")
		}
		if cfg.GitKnownHostsFile != "" {
			ssh = append(ssh, "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile="+shellQuote(cfg.GitKnownHostsFile))
		} else {
			ssh = append(ssh, "-o", "StrictHostKeyChecking=accept-new", "-o", "UserKnownHostsFile="+shellQuote(homeDir+"/known_hosts"))
		}
		a.sshCmd = strings.Join(ssh, " ")
	}
	return a, nil
}

// readSecret reads a token file, trimming the newline editors and kubectl leave.
func readSecret(name string) (string, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", name)
	}
	return s, nil
}

// shellQuote quotes s for the shell git runs GIT_SSH_COMMAND with.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// newGitCmd builds the runner. The environment starts empty: no user or system git config, no
// credential helpers or askpass programs of the host, no terminal prompts, and a home of our own.
func newGitCmd(dir, homeDir string, author string, auth gitAuth, log *slog.Logger) (*gitCmd, error) {
	a, err := mail.ParseAddress(author)
	if err != nil {
		return nil, fmt.Errorf("parse --%s: %w", FlagGitAuthor, err)
	}
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + homeDir,
		"LC_ALL=C",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=" + a.Name, "GIT_AUTHOR_EMAIL=" + a.Address,
		"GIT_COMMITTER_NAME=" + a.Name, "GIT_COMMITTER_EMAIL=" + a.Address,
	}
	// Configuration through the environment (git >= 2.31) keeps it off the command line.
	cfg := [][2]string{
		{"core.autocrlf", "false"},
		{"credential.helper", ""},
		{"advice.detachedHead", "false"},
		{"init.defaultBranch", "main"},
	}
	var secrets []string
	if auth.token != "" {
		// GitHub takes a token as the password of basic auth; the header is scoped to the remote's host.
		basic := base64.StdEncoding.EncodeToString([]byte("x-access-token:" + auth.token))
		cfg = append(cfg, [2]string{"http." + auth.urlBase + ".extraHeader", "Authorization: Basic " + basic})
		secrets = append(secrets, auth.token, basic)
	}
	env = append(env, "GIT_CONFIG_COUNT="+strconv.Itoa(len(cfg)))
	for i, kv := range cfg {
		env = append(env, "GIT_CONFIG_KEY_"+strconv.Itoa(i)+"="+kv[0], "GIT_CONFIG_VALUE_"+strconv.Itoa(i)+"="+kv[1])
	}
	if auth.sshCmd != "" {
		env = append(env, "GIT_SSH_COMMAND="+auth.sshCmd)
	}
	return &gitCmd{dir: dir, env: env, secrets: secrets, log: log}, nil
}

// gitError is a failed git command with its trimmed, scrubbed stderr.
type gitError struct {
	args   string
	err    error
	stderr string
}

func (e *gitError) Error() string {
	if e.stderr == "" {
		return fmt.Sprintf("git %s: %v", e.args, e.err)
	}
	return fmt.Sprintf("git %s: %v: %s", e.args, e.err, e.stderr)
}

func (e *gitError) Unwrap() error { return e.err }

// run runs git with args and returns its stdout.
func (g *gitCmd) run(ctx context.Context, args ...string) (string, error) {
	return g.runInput(ctx, nil, args...)
}

func (g *gitCmd) runInput(ctx context.Context, stdin []byte, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = g.dir
	cmd.Env = g.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	g.log.Debug("git", "args", strings.Join(args, " "))
	if err := cmd.Run(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = errors.Join(err, ctxErr)
		}
		return stdout.String(), &gitError{args: strings.Join(args, " "), err: err, stderr: g.scrub(lastLines(stderr.String(), 5))}
	}
	return stdout.String(), nil
}

// scrub removes credentials from text that leaves the package. Git does not print extra headers, but
// a remote may echo what it got; a secret must never reach a log or an error either way.
func (g *gitCmd) scrub(s string) string {
	for _, sec := range g.secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "REDACTED")
		}
	}
	return s
}

// lastLines keeps the last n non-empty lines of git's stderr: the error is at the end, progress before it.
func lastLines(s string, n int) string {
	lines := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}
