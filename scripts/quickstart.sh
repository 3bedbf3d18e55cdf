#!/usr/bin/env bash
# Install what is needed, build, and run the demo: a boot storm of linked
# clones of one golden image, without and with the host cache daemon
# (sluice demo, on its defaults; see docs/man/sluice-demo.1).
# scripts/demo.sh shows the chain itself: two clones, what each reads.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh build
exec build/sluice demo
