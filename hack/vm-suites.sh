#!/usr/bin/env bash
# Runs compiled test binaries one after the other (inside the test VM: see hack/test.sh),
# each with $VM_TEST_THREADS threads (default 2), and prints one line per suite with its
# time and result. Every suite runs even when one fails; the status is non-zero if any did.
# Usage: hack/vm-suites.sh "NAME=BINARY [FILTER...]"... [-- TEST ARGS for every suite]
set -uo pipefail
threads="${VM_TEST_THREADS:-2}"
suites=()
while (($#)) && [[ $1 != -- ]]; do
	suites+=("$1")
	shift
done
[[ ${1:-} == -- ]] && shift
# What berth's tests could leave: netns, mounts, processes. Compared with what was there
# before (the VM's own shares and registries).
traces() { ip netns list; findmnt -rn -o TARGET; pgrep -af 'berth|shim|pause' | grep -v vm-suites; }
before="$(traces | sort)"
summary=()
failed=0
for suite in "${suites[@]}"; do
	name="${suite%%=*}"
	read -r -a run <<<"${suite#*=}"
	echo "=== $name ($(uname -r))"
	start=$SECONDS
	if "${run[@]}" --test-threads "$threads" "$@"; then
		result=ok
	else
		result=FAILED
		failed=1
	fi
	summary+=("$(printf '%-12s %-7s %4d s' "$name" "$result" $((SECONDS - start)))")
done
echo "=== suites on $(uname -r), $(stat -fc %T /sys/fs/cgroup):"
printf '  %s\n' "${summary[@]}"
# What the suites left behind is a bug too (the host's CI checks the same).
leftovers="$(comm -13 <(echo "$before") <(traces | sort))"
if [[ -n $leftovers ]]; then
	echo "=== left behind:"
	echo "$leftovers"
	failed=1
fi
exit "$failed"
