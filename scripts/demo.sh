#!/usr/bin/env bash
# The demo: a golden image, two linked clones of it with different data
# written into each, the backing chain, and what each clone reads.
set -euo pipefail
cd "$(dirname "$0")/.."
SLUICE=${SLUICE:-build/sluice}
dir=$(mktemp -d /tmp/sluice-demo.XXXXXX)
trap 'rm -rf "$dir"' EXIT
echo "not yet: the demo needs qcow2 images (issue 2)" >&2
exit 1
