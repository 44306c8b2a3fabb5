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
)

// NotOwnedError reports a policy whose name is desired but which exists in
// the cluster without our managed-by label. Sync leaves it alone.
type NotOwnedError struct {
	Name string
	// ManagedBy is the object's app.kubernetes.io/managed-by label, if any.
	ManagedBy string
}

func (e *NotOwnedError) Error() string {
	if e.ManagedBy == "" {
		return fmt.Sprintf("ciliumclusterwidenetworkpolicy %s exists and is not managed by recommender", e.Name)
	}
	return fmt.Sprintf("ciliumclusterwidenetworkpolicy %s exists and is managed by %q, not recommender", e.Name, e.ManagedBy)
}

// Is makes errors.Is(err, ErrNotOwned) match.
func (e *NotOwnedError) Is(target error) bool { return target == ErrNotOwned }
