// Package deploycheck holds the tests that keep deploy/ and charts/recommender honest: the
// kustomize base renders, the PrometheusRule carries exactly the promtool-tested rules, the
// Grafana dashboard is valid JSON over metrics the daemon exports, and every manifest is
// accepted by a real kube-apiserver (server-side dry run) with the real CRDs it uses
// installed: Cilium's from the cilium module, ServiceMonitor and PrometheusRule from the
// prometheus-operator module.
//
// # The Helm chart
//
// charts/recommender is linted (helm lint --strict) and rendered with the real helm CLI
// (internal/helmcli) for each value set in testdata/chart/, compared with its golden file
// (-update rewrites them), and the rendered objects are dry-run against the same API server.
// values.schema.json is tested with invalid values and the messages they must produce.
//
// # No drift between kustomize and Helm
//
// deploy/ stays hand-written (its comments explain each RBAC verb, and pkg/cluster applies
// deploy/rbac.yaml in its RBAC test); the chart's default render, as release "recommender" in
// kube-system, must equal `kubectl kustomize deploy/` object by object apart from Helm's own
// labels, and the chart's copies of the alert rules and the dashboard must equal deploy/'s.
package deploycheck
