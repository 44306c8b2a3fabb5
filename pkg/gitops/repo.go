package gitops

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// branchPrefix is the namespace of the branches we own and force-push.
const branchPrefix = "recommender/"

// Branch names of the two kinds of pull requests.
const (
	ProposalsBranch = branchPrefix + "proposals"
	promotePrefix   = branchPrefix + "promote-"
)

// PromotionBranch is the branch of the promotion pull request of one policy.
func PromotionBranch(policy string) string { return promotePrefix + policy }

// Branch names of a git path other than the default one carry it ("clusters/east" ->
// "recommender/clusters-east/proposals"): daemons of a ClusterMesh share one repository with
// --git-path clusters/<name>, and must never push each other's branches (issue 16).
func scopedBranch(gitPath, branch string) string {
	p := path.Clean(gitPath)
	if p == DefaultConfig().GitPath {
		return branch
	}
	return branchPrefix + strings.ReplaceAll(p, "/", "-") + "/" + strings.TrimPrefix(branch, branchPrefix)
}

// Repo writes policy files to branches of the policy repository with the git binary.
// It keeps one working clone; its methods must not be called concurrently.
type Repo struct {
	cfg     Config
	dir     string // work tree of the clone
	home    string // HOME of git and ssh: known_hosts, nothing else
	tempDir string // removed by Close when the work dir is ours
	log     *slog.Logger
}

// NewRepo prepares the work directory (cfg.GitWorkDir, or a temporary one). It does not touch the
// network; the first Fetch clones.
func NewRepo(cfg Config, log *slog.Logger) (*Repo, error) {
	r := &Repo{cfg: cfg, log: log.With("component", "gitops")}
	root := cfg.GitWorkDir
	if root == "" {
		tmp, err := os.MkdirTemp("", "recommender-gitops-")
		if err != nil {
			return nil, fmt.Errorf("create git work dir: %w", err)
		}
		root, r.tempDir = tmp, tmp
	}
	r.dir, r.home = filepath.Join(root, "repo"), filepath.Join(root, "home")
	for _, d := range []string{r.dir, r.home} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create git work dir: %w", err)
		}
	}
	return r, nil
}

// Close removes the work directory if NewRepo created it.
func (r *Repo) Close() error {
	if r.tempDir == "" {
		return nil
	}
	return os.RemoveAll(r.tempDir)
}

// session is one fetch-write-push cycle with the credentials read once at its start.
type session struct {
	r *Repo
	g *gitCmd
}

// open reads the credentials, makes sure the clone exists and points at --git-url, and fetches the base
// branch and our branches. Remote branches of ours that were deleted are pruned.
func (r *Repo) open(ctx context.Context) (*session, error) {
	auth, err := loadGitAuth(&r.cfg, r.home)
	if err != nil {
		return nil, err
	}
	g, err := newGitCmd(r.dir, r.home, r.cfg.GitAuthor, auth, r.log)
	if err != nil {
		return nil, err
	}
	s := &session{r: r, g: g}
	if _, err := os.Stat(filepath.Join(r.dir, ".git")); errors.Is(err, fs.ErrNotExist) {
		if _, err := g.run(ctx, "init", "--quiet"); err != nil {
			return nil, err
		}
		if _, err := g.run(ctx, "remote", "add", "origin", r.cfg.GitURL); err != nil {
			return nil, err
		}
	} else if _, err := g.run(ctx, "remote", "set-url", "origin", r.cfg.GitURL); err != nil {
		return nil, err
	}
	// Leftovers of an interrupted cycle must not leak into this one.
	if _, err := os.Stat(filepath.Join(r.dir, ".git", "rebase-merge")); err == nil {
		if _, err := g.run(ctx, "rebase", "--abort"); err != nil {
			return nil, err
		}
	}
	tctx, cancel := context.WithTimeout(ctx, r.cfg.GitTimeout)
	defer cancel()
	_, err = g.run(tctx, "fetch", "--quiet", "--prune", "--no-tags", "origin",
		"+refs/heads/"+r.cfg.GitBranch+":"+r.baseRef(),
		"+refs/heads/"+branchPrefix+"*:refs/remotes/origin/"+branchPrefix+"*")
	var ge *gitError
	if errors.As(err, &ge) && strings.Contains(ge.stderr, "couldn't find remote ref refs/heads/"+r.cfg.GitBranch) {
		return nil, fmt.Errorf("%s %q: %w", redactURL(r.cfg.GitURL), r.cfg.GitBranch, ErrBaseBranch)
	}
	if errors.As(err, &ge) && authFailure(ge.stderr) {
		return nil, fmt.Errorf("fetch %s: credentials rejected (check --%s or --%s): %w",
			redactURL(r.cfg.GitURL), FlagGitTokenFile, FlagGitSSHKeyFile, err)
	}
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", redactURL(r.cfg.GitURL), err)
	}
	return s, nil
}

// authFailure recognizes git's messages (LC_ALL=C) for refused or missing credentials.
func authFailure(stderr string) bool {
	for _, m := range []string{"could not read Username", "Authentication failed", "Permission denied (publickey", "Host key verification failed"} {
		if strings.Contains(stderr, m) {
			return true
		}
	}
	return false
}

func (r *Repo) baseRef() string { return "refs/remotes/origin/" + r.cfg.GitBranch }

func remoteRef(branch string) string { return "refs/remotes/origin/" + branch }

// revParse resolves rev to a commit; ok is false when it does not exist.
func (s *session) revParse(ctx context.Context, rev string) (string, bool, error) {
	out, err := s.g.run(ctx, "rev-parse", "--verify", "--quiet", rev+"^{commit}")
	if err != nil {
		var ge *gitError
		if errors.As(err, &ge) && ge.stderr == "" {
			return "", false, nil
		}
		return "", false, err
	}
	return strings.TrimSpace(out), true, nil
}

// baseFiles returns the managed policy files on the base branch, by repository-relative path.
func (s *session) baseFiles(ctx context.Context) (map[string][]byte, error) {
	base := s.r.baseRef()
	out, err := s.g.run(ctx, "ls-tree", "-r", "-z", "--name-only", base, "--", path.Clean(s.r.cfg.GitPath))
	if err != nil {
		return nil, err
	}
	var names []string
	for n := range strings.SplitSeq(out, "\x00") {
		if isPolicyFile(s.r.cfg.GitPath, n) {
			names = append(names, n)
		}
	}
	files := map[string][]byte{}
	if len(names) == 0 {
		return files, nil
	}
	var in bytes.Buffer
	for _, n := range names {
		fmt.Fprintf(&in, "%s:%s\n", base, n)
	}
	out, err = s.g.runInput(ctx, in.Bytes(), "cat-file", "--batch")
	if err != nil {
		return nil, err
	}
	br := bufio.NewReader(strings.NewReader(out))
	for _, n := range names {
		hdr, err := br.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("read %s from %s: %w", n, base, err)
		}
		f := strings.Fields(hdr)
		if len(f) != 3 || f[1] != "blob" {
			return nil, fmt.Errorf("read %s from %s: unexpected %q", n, base, strings.TrimSpace(hdr))
		}
		size, err := strconv.Atoi(f[2])
		if err != nil {
			return nil, fmt.Errorf("read %s from %s: %w", n, base, err)
		}
		content := make([]byte, size+1) // content and the newline cat-file appends
		if _, err := io.ReadFull(br, content); err != nil {
			return nil, fmt.Errorf("read %s from %s: %w", n, base, err)
		}
		if isManaged(content) {
			files[n] = content[:size]
		}
	}
	return files, nil
}

// isPolicyFile reports whether a repository path is a policy file directly in
// <git-path>/audit/ or <git-path>/enforced/, or in <git-path>/<namespace>/audit/ or enforced/
// (CiliumNetworkPolicies).
func isPolicyFile(gitPath, p string) bool {
	dir, file := path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	if !strings.HasSuffix(file, ".yaml") {
		return false
	}
	if st := path.Base(dir); st != string(StateAudit) && st != string(StateEnforced) {
		return false
	}
	parent, root := path.Dir(dir), path.Clean(gitPath)
	return parent == root || (path.Dir(parent) == root && namespaceName.MatchString(path.Base(parent)))
}

// branchSpec is what one branch must hold: the complete set of managed policy files (managed files
// not in it are deleted; files without our header are never touched), and the commit message.
type branchSpec struct {
	Branch  string
	Kind    Kind
	Files   map[string][]byte
	Message string
	Changes []Change
	// ReportPath is where the branch carries its review (Report); it is rewritten only in a
	// commit that changes policy files, so evidence alone never makes a commit.
	ReportPath string
	Report     []byte
}

// branchWrite is the outcome of writing one branch.
type branchWrite struct {
	Commit string // tip of the branch; empty when Empty
	Pushed bool   // a new commit was pushed
	Empty  bool   // the branch would equal the base branch: nothing to propose
}

// write makes spec.Branch one commit on top of the base branch holding spec.Files and pushes it if
// its content or its base changed. An existing remote branch is rebased first, so that someone
// else's change to a file we change too is reported as a *ConflictError instead of being overwritten.
func (s *session) write(ctx context.Context, spec branchSpec) (branchWrite, error) {
	var res branchWrite
	base := s.r.baseRef()
	baseCommit, _, err := s.revParse(ctx, base)
	if err != nil {
		return res, err
	}
	remote, exists, err := s.revParse(ctx, remoteRef(spec.Branch))
	if err != nil {
		return res, err
	}
	// A fresh clone has no HEAD yet, so there is nothing to reset.
	if _, hasHead, err := s.revParse(ctx, "HEAD"); err != nil {
		return res, err
	} else if hasHead {
		if _, err := s.g.run(ctx, "reset", "--quiet", "--hard"); err != nil {
			return res, err
		}
	}
	if _, err := s.g.run(ctx, "clean", "-ffdq"); err != nil {
		return res, err
	}
	if exists {
		if _, err := s.g.run(ctx, "checkout", "--quiet", "--force", "-B", spec.Branch, remote); err != nil {
			return res, err
		}
		if _, err := s.g.run(ctx, "rebase", "--quiet", base); err != nil {
			return res, s.rebaseConflict(ctx, spec.Branch, err)
		}
	} else if _, err := s.g.run(ctx, "checkout", "--quiet", "--force", "-B", spec.Branch, base); err != nil {
		return res, err
	}
	if err := s.applyFiles(spec.Files); err != nil {
		return res, err
	}
	// The whole tree, not a pathspec: git refuses a pathspec that matches nothing (a first
	// sync with no policy yet), and the tree was reset and cleaned, so only our files changed.
	if _, err := s.g.run(ctx, "add", "--all"); err != nil {
		return res, err
	}
	// One commit on top of the base: the PR shows a single reviewable change, whatever happened before.
	if _, err := s.g.run(ctx, "reset", "--quiet", "--soft", base); err != nil {
		return res, err
	}
	// Only policy files decide: the report the remote branch carries is not a change.
	root := path.Clean(s.r.cfg.GitPath)
	if _, err := s.g.run(ctx, "diff", "--cached", "--quiet", base, "--", root, ":(exclude,glob)"+path.Join(root, "reports", "*.md")); err == nil {
		res.Empty = true
		_, err := s.g.run(ctx, "reset", "--quiet", "--hard", base)
		return res, err
	}
	tree, err := s.g.run(ctx, "write-tree")
	if err != nil {
		return res, err
	}
	tree = strings.TrimSpace(tree)
	if exists {
		same, err := s.sameCommit(ctx, remote, tree, baseCommit)
		if err != nil {
			return res, err
		}
		if same {
			// Same policies on the same base (the remote's report is still in the tree): no
			// commit, no push, whatever new evidence the report would have said.
			_, err := s.g.run(ctx, "reset", "--quiet", "--hard", remote)
			res.Commit = remote
			return res, err
		}
	}
	if spec.ReportPath != "" {
		abs := filepath.Join(s.r.dir, filepath.FromSlash(spec.ReportPath))
		if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
			return res, fmt.Errorf("write %s: %w", spec.ReportPath, err)
		}
		if err := os.WriteFile(abs, spec.Report, 0o644); err != nil {
			return res, fmt.Errorf("write %s: %w", spec.ReportPath, err)
		}
		if _, err := s.g.run(ctx, "add", "--", spec.ReportPath); err != nil {
			return res, err
		}
	}
	if _, err := s.g.runInput(ctx, []byte(spec.Message), "commit", "--quiet", "--no-verify", "--file", "-"); err != nil {
		return res, err
	}
	head, _, err := s.revParse(ctx, "HEAD")
	if err != nil {
		return res, err
	}
	if err := s.push(ctx, spec.Branch, head, remote); err != nil {
		return res, err
	}
	res.Commit, res.Pushed = head, true
	return res, nil
}

// sameCommit reports whether commit has tree and the single parent parent.
func (s *session) sameCommit(ctx context.Context, commit, tree, parent string) (bool, error) {
	out, err := s.g.run(ctx, "show", "--no-patch", "--format=%T %P", commit)
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(out) == tree+" "+parent, nil
}

// rebaseConflict turns a failed rebase into a *ConflictError naming the files, and aborts it.
func (s *session) rebaseConflict(ctx context.Context, branch string, rebaseErr error) error {
	out, err := s.g.run(ctx, "diff", "--name-only", "--diff-filter=U")
	files := strings.Fields(out)
	if _, abortErr := s.g.run(ctx, "rebase", "--abort"); abortErr != nil {
		return errors.Join(rebaseErr, abortErr)
	}
	if err != nil || len(files) == 0 {
		return fmt.Errorf("rebase %s onto %s: %w", branch, s.r.cfg.GitBranch, rebaseErr)
	}
	slices.Sort(files)
	return &ConflictError{Branch: branch, Base: s.r.cfg.GitBranch, Files: files}
}

// applyFiles makes the managed files of the work tree equal to files.
func (s *session) applyFiles(files map[string][]byte) error {
	// Policy files sit two or three levels below the git path (isPolicyFile).
	root := path.Clean(s.r.cfg.GitPath)
	var dirs []string
	for _, st := range []State{StateAudit, StateEnforced} {
		dirs = append(dirs, path.Join(root, string(st)))
	}
	nss, err := os.ReadDir(filepath.Join(s.r.dir, filepath.FromSlash(root)))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read %s: %w", root, err)
	}
	for _, e := range nss {
		if e.IsDir() && namespaceName.MatchString(e.Name()) {
			for _, st := range []State{StateAudit, StateEnforced} {
				dirs = append(dirs, path.Join(root, e.Name(), string(st)))
			}
		}
	}
	for _, d := range dirs {
		entries, err := os.ReadDir(filepath.Join(s.r.dir, filepath.FromSlash(d)))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", d, err)
		}
		for _, e := range entries {
			rel := path.Join(d, e.Name())
			if _, keep := files[rel]; keep || !e.Type().IsRegular() || !isPolicyFile(s.r.cfg.GitPath, rel) {
				continue
			}
			abs := filepath.Join(s.r.dir, filepath.FromSlash(rel))
			content, err := os.ReadFile(abs)
			if err != nil {
				return fmt.Errorf("read %s: %w", rel, err)
			}
			if !isManaged(content) {
				continue
			}
			if err := os.Remove(abs); err != nil {
				return fmt.Errorf("remove %s: %w", rel, err)
			}
		}
	}
	for _, rel := range slices.Sorted(maps.Keys(files)) {
		abs := filepath.Join(s.r.dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
			return fmt.Errorf("write %s: %w", rel, err)
		}
		if err := os.WriteFile(abs, files[rel], 0o644); err != nil {
			return fmt.Errorf("write %s: %w", rel, err)
		}
	}
	return nil
}

// push force-pushes commit to branch, but only over the commit we fetched (expect, empty when the
// branch did not exist): a concurrent push to our branch is reported, not overwritten blindly.
func (s *session) push(ctx context.Context, branch, commit, expect string) error {
	tctx, cancel := context.WithTimeout(ctx, s.r.cfg.GitTimeout)
	defer cancel()
	ref := "refs/heads/" + branch
	out, err := s.g.run(tctx, "push", "--porcelain", "--force-with-lease="+ref+":"+expect, "origin", commit+":"+ref)
	if err != nil {
		// --porcelain reports a refused ref on stdout: "!	<src>:<dst>	[rejected] (stale info)".
		if strings.Contains(out, "[rejected]") || strings.Contains(out, "[remote rejected]") {
			return fmt.Errorf("push %s: %w: %w", branch, ErrPushRejected, err)
		}
		return fmt.Errorf("push %s: %w", branch, err)
	}
	if _, err := s.g.run(ctx, "update-ref", remoteRef(branch), commit); err != nil {
		return err
	}
	s.r.log.Info("branch pushed", "branch", branch, "commit", commit)
	return nil
}
