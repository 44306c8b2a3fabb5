// Package gitops delivers proposed network policies as reviewable pull requests: it keeps a policy
// repository's branches up to date with the git binary and opens or updates pull requests through
// the GitHub REST API (google/go-github). It is the sink at the end of
// flows -> aggregate -> synth -> audit -> gitops: the caller maps synthesis and audit results into a
// ChangeSet of Proposals (name, state, YAML, revision, rule diff, flow evidence, would-be-denied
// flows, audit window). The only stage it imports is synth, to draw each proposal's YAML and rule
// diff as a Mermaid graph in the pull request body (synth.PolicyGraph); it decides nothing from them.
//
// # Use
//
//	cfg := gitops.DefaultConfig()        // fields named after --git-url, ..., --pr-interval
//	...
//	if err := cfg.Validate(); err != nil { ... }
//	log.Info("gitops", "config", cfg)    // String() holds no secret
//	pub, err := gitops.New(cfg, gitops.SystemClock{}, log, reg)
//	defer pub.Close()
//	res, err := pub.Publish(ctx, changeSet) // whenever the recommendation changes
//	res, err = pub.Flush(ctx)               // on a ticker: sends a change set deferred by --pr-interval
//
// Publish and Flush are synchronous and do network I/O (git fetch/push, GitHub API), each call bounded
// by --git-timeout; call them only from the Lease holder. A Publisher serializes its own calls.
//
// # Repository layout
//
// One file per policy, <git-path>/audit/<name>.yaml or <git-path>/enforced/<name>.yaml by state;
// a CiliumNetworkPolicy (Proposal.Namespace set, --policy-kind CiliumNetworkPolicy) lives in its
// namespace's directory, <git-path>/<namespace>/audit/<name>.yaml or .../enforced/<name>.yaml, so
// each team's policies sit below one directory it can own (CODEOWNERS, a path-scoped Argo CD or Flux
// source) and a promotion stays within it. Every
// file starts with a "# Managed by recommender" header naming the policy and its revision; only files
// with that header are ours: we rewrite, move and delete them, and never touch any other file.
// A policy of ours that is missing from the change set is deleted.
//
// # Branches and pull requests
//
//	recommender/proposals          one PR (labels network-policy, audit): new, changed, demoted and
//	                               removed policies
//	recommender/promote-<policy>   one PR per policy (labels network-policy, promotion): moves
//	                               audit/<policy>.yaml to enforced/ once the caller marks it enforced
//
// Each branch is exactly one commit on top of --git-branch, rewritten and force-pushed (with a lease
// on the commit we fetched) when its content or the base branch changed. Before rewriting, the
// remote branch is rebased onto the base branch: when another committer changed a file our branch
// changes too, the result is a *ConflictError naming the files and the remote branch is left alone.
// The pull request of a branch is found by its head (GET /pulls?head=owner:branch&state=open) and
// edited in place; a second one is never opened.
//
// # Noise control
//
//   - A change set is compared by names, states and revisions (sorted by name, so order never matters)
//     with the last one published; an equal one does nothing. Evidence alone never updates a PR.
//   - At most one publication per --pr-interval; a newer change set replaces a deferred one.
//   - Same content on the same base: no commit, no push, no PR edit (the body is compared first).
//   - A branch whose content the base branch already has is not pushed and gets no PR.
//
// # Secrets
//
// Tokens and keys are read from files (--git-token-file, --git-ssh-key-file, --github-token-file) at
// each use, so rotated Kubernetes secrets apply without a restart. git runs with a clean environment
// (no user or system config, no credential helpers, GIT_TERMINAL_PROMPT=0); the HTTPS token reaches
// git as an http.extraHeader scoped to the remote's host through GIT_CONFIG_* environment variables,
// the SSH key through GIT_SSH_COMMAND (-i, IdentitiesOnly, and StrictHostKeyChecking=yes with
// --git-known-hosts-file or accept-new without). Nothing secret is ever on a command line, in a log
// line or in an error; git's stderr is scrubbed of the token before it is reported.
//
// # GitHub errors
//
// 401, 403, 404 and 422 map to ErrUnauthorized, ErrForbidden, ErrNotFound and ErrValidation with
// GitHub's message. Rate limits (403 or 429) are waited out on the injected Clock: Retry-After, else
// X-RateLimit-Reset when X-RateLimit-Remaining is 0, else one minute; after three retries, or when the
// wait would exceed 15 minutes, the call fails with ErrRateLimited and the next cycle tries again.
//
// # Not here
//
// Deciding states and promotion (pkg/audit), rendering YAML and rule diffs (pkg/synth), applying
// policies to a cluster (pkg/cluster), leader election and scheduling (cmd/recommender, pkg/daemon).
package gitops
