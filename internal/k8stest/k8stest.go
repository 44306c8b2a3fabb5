package k8stest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/recommender/recommender/internal/testbin"
)

const (
	// EnvEnable turns the integration tests on (any non-empty value but "0").
	EnvEnable = "RECOMMENDER_K8S"

	// adminUser is the name of the token user in system:masters.
	adminUser = "k8stest-admin"

	// startTimeout bounds waiting for readiness; on a loaded 2-core machine kube-apiserver
	// has been seen to need more than a minute.
	startTimeout = 3 * time.Minute
	stopTimeout  = 30 * time.Second
)

// Cluster is a running etcd + kube-apiserver pair.
type Cluster struct {
	// Config authenticates as an admin in system:masters.
	Config *rest.Config
	// Kubeconfig is the path of a kubeconfig file for the admin (kubectl --kubeconfig).
	Kubeconfig string

	dir       string
	etcd      *exec.Cmd
	apiserver *exec.Cmd
	// skip is why Require skips or fails when no cluster was started.
	skip string
	// fail makes Require fail instead of skip (CI must not pass by skipping).
	fail bool
}

// Enabled reports whether the environment asks for integration tests.
func Enabled() bool {
	v := os.Getenv(EnvEnable)
	return (v != "" && v != "0") || os.Getenv("CI") == "true"
}

// BinDir is where build.sh caches etcd and kube-apiserver.
func BinDir() string { return testbin.CacheDir() }

// Main runs m with a cluster in *c when Enabled, and stops it afterwards.
// It returns the exit code for os.Exit. When no cluster is started, *c still
// holds a Cluster whose Require explains why, so tests that need none run.
func Main(m *testing.M, c **Cluster) int {
	switch {
	case !Enabled():
		*c = &Cluster{skip: "integration test: set " + EnvEnable + "=1 (and run internal/k8stest/build.sh once) to run it against a real kube-apiserver"}
		return m.Run()
	case !binariesPresent():
		*c = &Cluster{
			skip: fmt.Sprintf("integration test: etcd and kube-apiserver are missing from %s; run internal/k8stest/build.sh", BinDir()),
			fail: os.Getenv("CI") == "true",
		}
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	cl, err := Start(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "k8stest:", err)
		return 1
	}
	*c = cl
	code := m.Run()
	if err := cl.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "k8stest:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// Require skips t (or fails it in CI) when no cluster is running.
func (c *Cluster) Require(tb testing.TB) {
	tb.Helper()
	switch {
	case c == nil:
		tb.Fatal("k8stest: no cluster; call k8stest.Main from TestMain")
	case c.Config != nil:
	case c.fail:
		tb.Fatal(c.skip)
	default:
		tb.Skip(c.skip)
	}
}

func binariesPresent() bool {
	for _, name := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(BinDir(), name)); err != nil {
			return false
		}
	}
	return true
}

// Start runs etcd and kube-apiserver from BinDir, waits until the API server
// is ready, installs Cilium's policy CRDs and writes a kubeconfig. The caller
// must call Stop.
func Start(ctx context.Context) (_ *Cluster, err error) {
	dir, err := os.MkdirTemp("", "k8stest-")
	if err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	c := &Cluster{dir: dir}
	defer func() {
		if err != nil {
			// c, not the named result: that is nil by now.
			err = errors.Join(err, c.Stop())
		}
	}()

	etcdURL, err := c.startEtcd(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.startAPIServer(ctx, etcdURL); err != nil {
		return nil, err
	}
	if err := installCiliumCRDs(ctx, c.Config); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cluster) startEtcd(ctx context.Context) (string, error) {
	ports, err := freePorts(2)
	if err != nil {
		return "", err
	}
	client := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	c.etcd, err = c.spawn("etcd",
		"--name=k8stest",
		"--data-dir="+filepath.Join(c.dir, "etcd"),
		"--listen-client-urls="+client,
		"--advertise-client-urls="+client,
		"--listen-peer-urls="+peer,
		"--initial-advertise-peer-urls="+peer,
		"--initial-cluster=k8stest="+peer,
		"--log-level=warn",
	)
	if err != nil {
		return "", err
	}
	err = c.waitHTTP(ctx, "etcd", client+"/health", http.DefaultClient, nil)
	return client, err
}

func (c *Cluster) startAPIServer(ctx context.Context, etcdURL string) error {
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	host := "https://127.0.0.1:" + strconv.Itoa(ports[0])
	certDir := filepath.Join(c.dir, "pki")
	saKey, saPub, err := writeServiceAccountKeys(c.dir)
	if err != nil {
		return err
	}
	token, err := randomToken()
	if err != nil {
		return err
	}
	tokens := filepath.Join(c.dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(token+","+adminUser+","+adminUser+",system:masters\n"), 0o600); err != nil {
		return fmt.Errorf("write token file: %w", err)
	}
	c.apiserver, err = c.spawn("kube-apiserver",
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(ports[0]),
		"--cert-dir="+certDir,
		"--service-account-key-file="+saPub,
		"--service-account-signing-key-file="+saKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=RBAC",
		"--token-auth-file="+tokens,
		// No controller-manager creates default service accounts.
		"--disable-admission-plugins=ServiceAccount",
		"--v=0",
	)
	if err != nil {
		return err
	}
	caFile := filepath.Join(certDir, "apiserver.crt")
	// The serving certificate is self-signed and written only after start, so
	// readiness is polled without verification; everything after it verifies
	// against the written certificate.
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if err := c.waitHTTP(ctx, "kube-apiserver", host+"/readyz", insecure, map[string]string{"Authorization": "Bearer " + token}); err != nil {
		return err
	}
	c.Config = &rest.Config{
		Host:            host,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAFile: caFile},
		// Tests issue bursts of requests; client-side throttling would only slow them.
		QPS:   200,
		Burst: 400,
	}
	c.Kubeconfig = filepath.Join(c.dir, "kubeconfig")
	return writeKubeconfig(c.Kubeconfig, host, caFile, token)
}

// spawn starts a binary from BinDir with its output in the state directory.
func (c *Cluster) spawn(name string, args ...string) (*exec.Cmd, error) {
	logFile, err := os.Create(filepath.Join(c.dir, name+".log"))
	if err != nil {
		return nil, fmt.Errorf("create %s log: %w", name, err)
	}
	defer logFile.Close()
	cmd := exec.Command(filepath.Join(BinDir(), name), args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The servers die with the test binary even when it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return cmd, nil
}

// waitHTTP polls url until it answers 200, the process exits or ctx ends.
func (c *Cluster) waitHTTP(ctx context.Context, name, url string, client *http.Client, header map[string]string) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("wait for %s: %w", name, err)
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s at %s: %w\n%s", name, url, ctx.Err(), c.logTail(name))
		case <-tick.C:
		}
	}
}

// logTail returns the end of a server's log for error messages.
func (c *Cluster) logTail(name string) string {
	b, err := os.ReadFile(filepath.Join(c.dir, name+".log"))
	if err != nil {
		return ""
	}
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return name + " log (tail):\n" + string(b)
}

// Stop terminates kube-apiserver, then etcd, and removes the state directory.
func (c *Cluster) Stop() error {
	var errs []error
	for _, p := range []struct {
		name string
		cmd  *exec.Cmd
	}{{"kube-apiserver", c.apiserver}, {"etcd", c.etcd}} {
		if err := terminate(p.cmd); err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", p.name, err))
		}
	}
	c.apiserver, c.etcd, c.Config = nil, nil, nil
	if c.dir != "" {
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove state dir: %w", err))
		}
	}
	return errors.Join(errs...)
}

// terminate sends SIGTERM and waits, then SIGKILL after stopTimeout.
func terminate(cmd *exec.Cmd) error {
	if cmd == nil || cmd.Process == nil {
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case err := <-done:
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			// Exiting on SIGTERM (with or without a status) is the expected end.
			return nil
		}
		return err
	case <-time.After(stopTimeout):
		if err := cmd.Process.Kill(); err != nil {
			return err
		}
		<-done
		return fmt.Errorf("did not exit within %s of SIGTERM; killed", stopTimeout)
	}
}

// freePorts asks the kernel for n free loopback ports. Another process may
// take one before the server binds it; the servers then fail to start and
// the error says so.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// writeServiceAccountKeys writes the RSA key pair the API server signs and
// verifies service-account tokens with.
func writeServiceAccountKeys(dir string) (keyFile, pubFile string, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", "", fmt.Errorf("generate service-account key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return "", "", fmt.Errorf("encode service-account public key: %w", err)
	}
	keyFile, pubFile = filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return "", "", fmt.Errorf("write service-account key: %w", err)
	}
	if err := os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return "", "", fmt.Errorf("write service-account public key: %w", err)
	}
	return keyFile, pubFile, nil
}

func randomToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate admin token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// writeKubeconfig writes a kubeconfig for the admin token. It is plain text so
// the helper needs no clientcmd dependency.
func writeKubeconfig(path, host, caFile, token string) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, `apiVersion: v1
kind: Config
clusters:
- name: k8stest
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: k8stest
  context:
    cluster: k8stest
    user: %s
current-context: k8stest
`, host, caFile, adminUser, token, adminUser)
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

// moduleDir returns the directory of a module in the build list of the
// module the test runs in.
func moduleDir(ctx context.Context, module string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", module).Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			err = fmt.Errorf("%w: %s", err, exit.Stderr)
		}
		return "", fmt.Errorf("locate module %s: %w", module, err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return "", fmt.Errorf("locate module %s: not downloaded", module)
	}
	return dir, nil
}
