#!/usr/bin/env bash
# Validates the Prometheus alert rules shipped in deploy/ and runs their unit tests.
set -euo pipefail
cd "$(dirname "$0")/.."
promtool check rules deploy/prometheus/rules.yaml
promtool test rules deploy/prometheus/rules_test.yaml
