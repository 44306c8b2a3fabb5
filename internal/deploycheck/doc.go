// Package deploycheck holds the tests that keep deploy/ honest: the kustomize base renders,
// the PrometheusRule carries exactly the promtool-tested rules, the Grafana dashboard is
// valid JSON over metrics the daemon exports, and every manifest is accepted by a real
// kube-apiserver (server-side dry run) with the real CRDs it uses installed: Cilium's from
// the cilium module, ServiceMonitor and PrometheusRule from the prometheus-operator module.
package deploycheck
