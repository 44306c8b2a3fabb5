package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/recommender/recommender/pkg/cluster"
	"github.com/recommender/recommender/pkg/flows"
	"github.com/recommender/recommender/pkg/replicas"
)

// Flags of the replica set (issue 19): the replicas of `run --hubble-peers` split the nodes.
const (
	flagReplicas     = "replicas"
	flagReplicaIndex = "replica-index"
	flagReplicaURLs  = "replica-urls"
	flagReplicaWait  = "replica-wait"
	flagMembership   = "replica-membership"
	// Values of --replica-membership.
	membershipStatic = "static"
	membershipLease  = "lease"
	// indexPlaceholder in a single --replica-urls entry stands for each replica's index.
	indexPlaceholder = "{index}"
)

// replicaOptions are the replica flags of `run`.
type replicaOptions struct {
	count int
	index int
	urls  []string
	wait  time.Duration
	// membership is how the live replicas are known (--replica-membership).
	membership string
	fs         *pflag.FlagSet
	// podName is where the default index comes from (the StatefulSet pod's name).
	podName func() string
}

func (o *replicaOptions) addFlags(fs *pflag.FlagSet) {
	o.fs = fs
	o.podName = defaultPodName
	fs.IntVar(&o.count, flagReplicas, 1, "with --hubble-peers: how many replicas share the nodes; each node is read by one of them (rendezvous hashing of the node name) and every replica synthesizes from the merge of all replicas' edges")
	fs.IntVar(&o.index, flagReplicaIndex, 0, "this replica's index, 0 to --replicas minus 1 (default: the ordinal of the StatefulSet pod name in $POD_NAME or the hostname)")
	fs.DurationVar(&o.wait, flagReplicaWait, replicas.DefaultWait, "at start, how long to wait for every other replica's edge summary (with --replica-membership=lease, every other replica whose Lease is live) before reading flows: a node that moved to this replica is read from where its previous owner stopped only once that owner answered")
	fs.StringVar(&o.membership, flagMembership, membershipStatic, `how the replicas that read nodes are known: "static" (all --replicas, a dead one's nodes stay unread until it returns) or "lease" (each replica renews a Lease <leader-elect-name>-replica-<index> in --leader-elect-namespace; the nodes of a replica whose Lease expired move to the live ones, and a replica that cannot renew its own stops reading)`)
	fs.StringSliceVar(&o.urls, flagReplicaURLs, nil, `the metrics address of every replica by index, where each serves its edge summary: one URL each, or one URL with "{index}" (http://recommender-{index}.recommender:9962)`)
}

func defaultPodName() string {
	if v := os.Getenv("POD_NAME"); v != "" {
		return v
	}
	h, _ := os.Hostname()
	return h
}

// enabled reports whether several replicas share the nodes.
func (o *replicaOptions) enabled() bool { return o.count > 1 }

// leases reports whether the live replicas are known from their Leases.
func (o *replicaOptions) leases() bool { return o.enabled() && o.membership == membershipLease }

// membershipConfig is the Lease configuration of replica self: the leader election's
// namespace, its Lease name as prefix and its timings.
func (o *replicaOptions) membershipConfig(self int, namespace, name string) replicas.MembershipConfig {
	ec := cluster.DefaultElectionConfig(o.podName())
	// The pod name plus a random suffix, as client-go's leader election does: a pod that
	// replaces one force-deleted on a cut-off node has the same name, and must wait for the
	// old process's Lease to expire instead of renewing it as its own.
	return replicas.MembershipConfig{
		Namespace: namespace, Name: name, Self: self, Replicas: o.count, Identity: ec.Identity + "_" + rand.Text()[:8],
		LeaseDuration: ec.LeaseDuration, RenewDeadline: ec.RenewDeadline, RetryPeriod: ec.RetryPeriod,
	}
}

// config settles the index and URLs and checks them with the source; metricsAddr is where
// this replica serves its summary.
func (o *replicaOptions) config(src *sourceOptions, metricsAddr string, maxEdges int) (replicas.Config, error) {
	if o.count < 1 {
		return replicas.Config{}, fmt.Errorf("--%s %d: must be at least 1", flagReplicas, o.count)
	}
	switch o.membership {
	case "", membershipStatic, membershipLease: // "" is the zero value: options built without flags
	default:
		return replicas.Config{}, fmt.Errorf("--%s %q: want %s or %s", flagMembership, o.membership, membershipStatic, membershipLease)
	}
	if !o.enabled() {
		for _, f := range []string{flagReplicaIndex, flagReplicaURLs, flagMembership} {
			if o.fs != nil && o.fs.Changed(f) {
				return replicas.Config{}, fmt.Errorf("--%s needs --%s above 1", f, flagReplicas)
			}
		}
		return replicas.Config{}, nil
	}
	var errs []error
	if !src.fromPeers() {
		errs = append(errs, fmt.Errorf("--%s %d needs --%s: replicas split the nodes, a relay stream cannot be split", flagReplicas, o.count, flagHubblePeers))
	}
	if metricsAddr == "" {
		errs = append(errs, fmt.Errorf("--%s %d needs --metrics-addr: replicas pull each other's edge summaries from it", flagReplicas, o.count))
	}
	idx := o.index
	if o.fs == nil || !o.fs.Changed(flagReplicaIndex) {
		pod := o.podName()
		n, err := flows.Ordinal(pod)
		if err != nil {
			errs = append(errs, fmt.Errorf("--%s not set and no index in the pod name: %w", flagReplicaIndex, err))
		}
		idx = n
	}
	urls := o.urls
	if len(urls) == 1 && strings.Contains(urls[0], indexPlaceholder) {
		urls = make([]string, o.count)
		for i := range urls {
			urls[i] = strings.ReplaceAll(o.urls[0], indexPlaceholder, strconv.Itoa(i))
		}
	}
	if len(urls) != o.count {
		errs = append(errs, fmt.Errorf("--%s lists %d URLs for --%s %d: give one per replica, or one with %s", flagReplicaURLs, len(urls), flagReplicas, o.count, indexPlaceholder))
	}
	cfg := replicas.Config{Self: idx, URLs: urls, Wait: o.wait, MaxSummary: replicas.MaxSummaryFor(maxEdges)}
	if len(urls) == o.count {
		if err := cfg.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("--%s/--%s: %w", flagReplicaIndex, flagReplicaURLs, err))
		}
	}
	return cfg, errors.Join(errs...)
}
