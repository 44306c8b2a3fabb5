package gitops

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock whose Sleep advances time instead of waiting.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	slept []time.Duration
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.slept = append(c.slept, d)
	c.now = c.now.Add(d)
	return ctx.Err()
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// logBuffer captures slog output of the package under test, at debug level, so tests can check
// what reaches the logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newTestLogger(t *testing.T) (*slog.Logger, *logBuffer) {
	t.Helper()
	lb := &logBuffer{}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// testGit runs git for the test's own clones ("another committer"), isolated from the host's config.
func testGit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "LC_ALL=C", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=Other Committer", "GIT_AUTHOR_EMAIL=other@example.com",
		"GIT_COMMITTER_NAME=Other Committer", "GIT_COMMITTER_EMAIL=other@example.com",
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// testRemote is a bare repository with a main branch, and a clone of it used as another committer.
type testRemote struct {
	bare  string
	other string
}

func newTestRemote(t *testing.T) *testRemote {
	t.Helper()
	root := t.TempDir()
	r := &testRemote{bare: filepath.Join(root, "remote.git"), other: filepath.Join(root, "other")}
	testGit(t, root, "init", "--quiet", "--bare", "--initial-branch=main", r.bare)
	testGit(t, root, "clone", "--quiet", r.bare, r.other)
	testGit(t, r.other, "checkout", "--quiet", "-b", "main")
	if err := os.WriteFile(filepath.Join(r.other, "README.md"), []byte("policy repository\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	testGit(t, r.other, "add", "README.md")
	testGit(t, r.other, "commit", "--quiet", "-m", "initial commit")
	testGit(t, r.other, "push", "--quiet", "origin", "HEAD:main")
	return r
}

// commitFile commits a file as the other committer and pushes it to main.
func (r *testRemote) commitFile(t *testing.T, name, content, msg string) {
	t.Helper()
	testGit(t, r.other, "pull", "--quiet", "--ff-only", "origin", "main")
	p := filepath.Join(r.other, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	testGit(t, r.other, "add", name)
	testGit(t, r.other, "commit", "--quiet", "-m", msg)
	testGit(t, r.other, "push", "--quiet", "origin", "HEAD:main")
}

// merge merges branch into main as the other committer, as a reviewer merging the PR would.
func (r *testRemote) merge(t *testing.T, branch string) {
	t.Helper()
	testGit(t, r.other, "fetch", "--quiet", "origin")
	testGit(t, r.other, "merge", "--quiet", "--ff-only", "origin/main")
	testGit(t, r.other, "merge", "--quiet", "--no-ff", "-m", "merge "+branch, "origin/"+branch)
	testGit(t, r.other, "push", "--quiet", "origin", "HEAD:main")
}

// rev resolves a revision in the bare remote; "" when it does not exist.
func (r *testRemote) rev(t *testing.T, rev string) string {
	t.Helper()
	cmd := exec.Command("git", "rev-parse", "--verify", "--quiet", rev)
	cmd.Dir = r.bare
	out, _ := cmd.Output()
	return strings.TrimSpace(string(out))
}

// tree lists the files of a revision in the bare remote.
func (r *testRemote) tree(t *testing.T, rev string) []string {
	t.Helper()
	return strings.Fields(testGit(t, r.bare, "ls-tree", "-r", "--name-only", rev))
}

func (r *testRemote) show(t *testing.T, rev, file string) string {
	t.Helper()
	return testGit(t, r.bare, "show", rev+":"+file)
}

func testConfig(t *testing.T, gitURL string) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.GitURL = gitURL
	cfg.GitWorkDir = t.TempDir()
	cfg.GitOnly = true
	cfg.PRInterval = 0
	return cfg
}

func proposal(name string, state State, rev string) Proposal {
	return Proposal{
		Name:     name,
		State:    state,
		Revision: rev,
		YAML: []byte("apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: " + name +
			"\n  annotations:\n    recommender/revision: " + rev + "\nspec: {}\n"),
	}
}

func writeFile(name, content string) error { return os.WriteFile(name, []byte(content), 0o600) }
