// Package k8stest starts a real etcd and kube-apiserver for integration tests.
//
// No prebuilt Kubernetes binaries can be downloaded where this project is
// built, so build.sh compiles kube-apiserver from the Go module proxy and
// caches it (see ../shared/K8S-NOTES.md for the recipe and its pitfalls).
// Start uses the cached binaries; it never builds them, because a cold build
// takes minutes and belongs in the test command, not inside a test.
//
// # Use
//
//	var env *k8stest.Cluster
//
//	func TestMain(m *testing.M) { os.Exit(k8stest.Main(m, &env)) }
//
//	func TestApply(t *testing.T) {
//		env.Require(t) // skips (or fails in CI) when no server is running
//		...
//	}
//
// Main starts the servers only when RECOMMENDER_K8S=1 or CI=true. Without
// them, Require skips with a message saying how to run the tests. When the
// servers are wanted but the binaries are missing, Require skips outside CI
// and fails when CI=true, so CI never passes by skipping.
//
// # What runs
//
// etcd and kube-apiserver listen on free loopback ports with state in a
// temporary directory. The API server authorizes with RBAC, authenticates an
// admin token in system:masters, signs service-account tokens with a fresh RSA
// key, and has Cilium's CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy
// CRDs installed from the cilium module this project depends on. There is no
// controller-manager: deleted namespaces stay Terminating and nothing is
// garbage collected, so tests use unique names and delete what they create.
//
// Stop terminates kube-apiserver before etcd: with etcd gone first the API
// server ignores SIGTERM for over a minute.
package k8stest
