#!/usr/bin/env bash
# Install what sluice needs to build and test, from Debian's packages.
# Idempotent and silent when everything is already there.
set -euo pipefail

packages=(
  # build
  meson ninja-build pkg-config gcc clang libclang-rt-14-dev
  zlib1g-dev libzstd-dev libssl-dev libfuse3-dev liburing-dev libcmocka-dev
  liblzma-dev libbz2-dev libsystemd-dev librbd-dev librados-dev
  # the Debian package and the filter kit (tests/install)
  dpkg-dev debhelper lintian make
  # run and test
  fuse3 qemu-utils libnbd-bin nbdkit fio e2fsprogs util-linux
  gnuplot-nox zstd xz-utils bzip2 gzip python3 procps openssl man-db bc
  # RBD: the single-node cluster of the tests and QEMU's rbd driver
  ceph-mon ceph-osd ceph-common qemu-block-extra
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
  SUDO=sudo
else
  SUDO=
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
