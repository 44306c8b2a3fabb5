package gitops

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrInvalidName is returned when a proposal's name is not a DNS-1123 subdomain (it becomes a file name).
	ErrInvalidName = errors.New("invalid policy name")
	// ErrDuplicateName is returned when a change set holds two proposals with one name.
	ErrDuplicateName = errors.New("duplicate policy name")
	// ErrInvalidState is returned when a proposal's state is neither audit nor enforced.
	ErrInvalidState = errors.New("invalid policy state")
	// ErrBaseBranch is returned when --git-branch does not exist on the remote.
	ErrBaseBranch = errors.New("base branch not found on remote")
	// ErrConflict is returned (inside a *ConflictError) when our branch cannot be rebased onto the base branch.
	ErrConflict = errors.New("conflict with base branch")
	// ErrPushRejected is returned when the remote refused a push, usually because someone else pushed to
	// our branch between fetch and push; the next cycle fetches again.
	ErrPushRejected = errors.New("push rejected")
	// ErrUnauthorized is returned for GitHub 401: the token is missing, wrong or expired.
	ErrUnauthorized = errors.New("github: unauthorized")
	// ErrForbidden is returned for a GitHub 403 that is not a rate limit: the token lacks a permission.
	ErrForbidden = errors.New("github: forbidden")
	// ErrNotFound is returned for GitHub 404: wrong --github-repo or API URL, or a token that cannot see the repo.
	ErrNotFound = errors.New("github: not found")
	// ErrValidation is returned for GitHub 422; the error text carries GitHub's validation messages.
	ErrValidation = errors.New("github: validation failed")
	// ErrRateLimited is returned when GitHub still rate-limits after all retries.
	ErrRateLimited = errors.New("github: rate limited")
)

// ConflictError names the files that conflict when rebasing our branch onto the base branch: someone
// changed on the base branch a file our branch changes too. Resolve it by merging or closing the pull
// request and deleting the branch; the next cycle then starts again from the base branch.
type ConflictError struct {
	Branch string
	Base   string
	Files  []string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("rebase %s onto %s: %v in %s", e.Branch, e.Base, ErrConflict, strings.Join(e.Files, ", "))
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }
