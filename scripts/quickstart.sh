#!/usr/bin/env bash
# Install what is needed, build, and run the demo: a golden image, two
# linked clones with different data, the chain, and what each clone reads.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh build
exec scripts/demo.sh
