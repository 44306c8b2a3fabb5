package cluster

import (
	"errors"
	"fmt"
)

var (
	// ErrApplyDisabled is returned by Sync when Config.Apply is off and no
	// server dry-run was asked for.
	ErrApplyDisabled = errors.New("applying to the cluster is disabled (--apply=off)")
	// ErrNotLeader is returned by Sync when its Gate says this replica does
	// not hold the lease; no write was made after the check failed.
	ErrNotLeader = errors.New("not the leader")
	// ErrLeaseLost is returned by Elector.Run when the lease was lost while
	// leading, before ctx was done.
	ErrLeaseLost = errors.New("leader lease lost")
	// ErrNotOwned is matched by *NotOwnedError with errors.Is.
	ErrNotOwned = errors.New("object not managed by recommender")
	// ErrDrift is matched by *DriftError with errors.Is.
	ErrDrift = errors.New("policy changed by another field manager")
	// ErrPruneRefused is returned by Sync when more retired policies would be
	// deleted in one sync than Config.MaxPruneRatio allows; none was deleted.
	ErrPruneRefused = errors.New("prune refused")
	// ErrLeaseForbidden is returned by Elector.Run when the service account
	// may not read or write the Lease: a missing Role, which retrying does not
	// mend.
	ErrLeaseForbidden = errors.New("leader election lease forbidden")
)

// NotOwnedError reports a policy whose name is desired but which exists in
// the cluster without our managed-by label. Sync leaves it alone.
type NotOwnedError struct {
	Name string
	// Namespace is the CiliumNetworkPolicy's namespace; "" for a CCNP.
	Namespace string
	// ManagedBy is the object's app.kubernetes.io/managed-by label, if any.
	ManagedBy string
}

func (e *NotOwnedError) Error() string {
	if e.ManagedBy == "" {
		return fmt.Sprintf("%s exists and is not managed by recommender", objectName(e.Namespace, e.Name))
	}
	return fmt.Sprintf("%s exists and is managed by %q, not recommender", objectName(e.Namespace, e.Name), e.ManagedBy)
}

// objectName names a policy object in messages: "ciliumclusterwidenetworkpolicy name" or
// "ciliumnetworkpolicy namespace/name".
func objectName(ns, name string) string {
	if ns == "" {
		return "ciliumclusterwidenetworkpolicy " + name
	}
	return "ciliumnetworkpolicy " + ns + "/" + name
}

// Is makes errors.Is(err, ErrNotOwned) match.
func (e *NotOwnedError) Is(target error) bool { return target == ErrNotOwned }

// DriftError reports a policy of ours that another field manager changed
// (kubectl edit, a controller). Sync leaves it as it is unless
// Config.ForceConflicts.
type DriftError struct {
	Name string
	// Namespace is the CiliumNetworkPolicy's namespace; "" for a CCNP.
	Namespace string
	// Managers are the object's field managers other than ours.
	Managers []string
	// Err is the API server's apply conflict, when the drift was found by one.
	Err error
}

func (e *DriftError) Error() string {
	msg := fmt.Sprintf("%s was changed by another field manager %v; left as it is (--force-conflicts takes it back)", objectName(e.Namespace, e.Name), e.Managers)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Is makes errors.Is(err, ErrDrift) match.
func (e *DriftError) Is(target error) bool { return target == ErrDrift }

// Unwrap returns the API error, if any.
func (e *DriftError) Unwrap() error { return e.Err }
