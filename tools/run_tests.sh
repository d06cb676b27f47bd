#!/bin/sh
# Runs each Check suite binary given on the command line from the repository
# root; prints one summary line and fails if any suite failed.
failed=0
for t in "$@"; do
    echo "== $t"
    if ! "$t"; then
        failed=$((failed + 1))
        echo "FAILED: $t"
    fi
done
echo "== $# suites, $failed failed"
[ "$failed" -eq 0 ]
