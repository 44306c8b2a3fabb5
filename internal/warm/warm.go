package warm

import (
	_ "github.com/cilium/cilium/api/v1/flow"
	_ "github.com/cilium/cilium/api/v1/observer"
	_ "github.com/cilium/cilium/pkg/k8s/apis/cilium.io/v2"
	_ "github.com/cilium/cilium/pkg/policy/api"
	_ "github.com/spf13/cobra"
	_ "go.etcd.io/bbolt"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "google.golang.org/grpc"
	_ "k8s.io/client-go/dynamic"
	_ "k8s.io/client-go/tools/leaderelection"
	_ "sigs.k8s.io/yaml"
)
