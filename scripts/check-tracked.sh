#!/usr/bin/env bash
# Fails when a tracked file is a build output: an executable binary (ELF, Mach-O, PE) or any
# file over 5 MB. Build outputs belong in bin/ (ignored), never in the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

limit=$((5 * 1024 * 1024))
bad=0
while IFS= read -r -d '' f; do
	[ -f "$f" ] || continue
	size=$(stat -c %s "$f")
	if ((size > limit)); then
		echo "tracked file $f is $size bytes (limit $limit): build outputs and large data do not belong in git" >&2
		bad=1
		continue
	fi
	magic=$(head -c 4 "$f" | od -An -tx1 | tr -d ' \n')
	case "$magic" in
	7f454c46 | cffaedfe | cefaedfe | feedfacf | feedface | 4d5a*)
		echo "tracked file $f is an executable binary ($magic): remove it and build into bin/" >&2
		bad=1
		;;
	esac
done < <(git ls-files -z)
exit $bad
