#!/usr/bin/env bash
# Issue 17, item 3: the filter kit.  The example filter (examples/
# filter-protect), copied out of the tree, builds with its Makefile -- cc
# $(pkg-config --cflags sluice-filter) -shared -fPIC -- against a staged
# `meson install` alone (pkg-config pointed at the staged root, nothing of
# the source tree on the include path).  The staged sluice trusts it with
# `sluice filter install` and it works in a stack: through `sluice io` and
# through `sluice serve` to qemu-io over NBD, writes to the protected range
# fail with its message and leave the data alone, others go through.  A
# copy built against a header one filter API version newer is refused,
# with a message that says so, and is not installed.
. "$(dirname "$0")/../common/lib.sh"
. "$(dirname "$0")/../export/serve.sh"
. "$(dirname "$0")/stage.sh"
require cc make pkg-config
cd "$TMP"

root=$TMP/root
stage_install "$root"
isluice() { "$root$bindir/sluice" "$@"; }
export SLUICE_FILTER_DIR=$TMP/mods
mkdir -m 755 mods
unset CPATH C_INCLUDE_PATH

# Out of the tree: only the example's own files.
cp -r "$SRCDIR/examples/filter-protect" ex
kit=(PKG_CONFIG_PATH="$root$datadir/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$root")
# Without the kit, the Makefile says what is missing (unless a sluice-dev
# is installed on this machine, which would then be used instead).
if ! pkg-config --exists sluice-filter; then
  expect_fail "pkg-config cannot find sluice-filter" env -u PKG_CONFIG_PATH make -C ex
fi
env "${kit[@]}" make -C ex CFLAGS="-O2 -Wall -Wextra -Werror" > make.log 2>&1 ||
  die "the example does not build against the staged kit: $(cat make.log)"
grep -q -- "-I$root$includedir" make.log || die "the build did not use the staged headers: $(cat make.log)"
[[ -f ex/protect.so ]] || die "no protect.so"

env "${kit[@]}" make -C ex install SLUICE="$root$bindir/sluice" >/dev/null ||
  die "make install (sluice filter install) failed"
grep -q '^protect ' mods/MANIFEST || die "protect is not in the manifest"
isluice filter list | grep -q '^protect .*refuse writes to a byte range' ||
  die "the installed sluice does not list protect: $(isluice filter list)"

# In a stack: crypt below it, so the example sits among shipped filters.
isluice filter install "$root$moddir/crypt.so" >/dev/null
head -c 64 /dev/urandom > key
isluice create -q -f qcow2 vm.qcow2 4M
isluice disk create vm.disk vm.qcow2
expect_fail "protect: unknown parameter 'size'" isluice filter attach vm.disk protect size=1
expect_fail "protect: end=4096 must be above start=65536" isluice filter attach vm.disk protect start=64K end=4096
isluice filter attach vm.disk crypt key="$TMP/key"
isluice filter attach vm.disk protect start=1M end=2M
assert_eq "$(isluice filter list vm.disk | awk '{print $1}' | tr '\n' ' ')" "crypt protect " "the stack"
isluice io vm.disk write -s "outside" 0 >/dev/null || die "a write outside the range failed"
expect_fail "protect: write of [0-9]+ bytes at offset 1048576 touches the protected range \[1048576, 2097152\)" \
  isluice io vm.disk write -s "inside" 1M
expect_fail "protect: (write-zeroes|write) of [0-9]+ bytes at offset 1572864 touches the protected range" isluice io vm.disk zero 1536K 4096
expect_fail "protect: (discard|write-zeroes|write) of [0-9]+ bytes at offset 1048576 touches the protected range" isluice io vm.disk discard 1M 1M
isluice io vm.disk write -s "after" 2M >/dev/null || die "a write just past the range failed"
assert_eq "$(isluice io vm.disk cat 0 7)" "outside" "read through the stack"
assert_eq "$(isluice io vm.disk cat 2M 5)" "after" "read past the range"

# Over NBD: the staged sluice serves the disk; qemu-io sees EPERM inside.
if command -v qemu-io >/dev/null; then
  before=$(isluice io vm.disk cat 1600K 4096 | md5sum)
  SLUICE=$root$bindir/sluice start_server vm.sock vm.disk
  qemu-io -f raw -c "write -P 0x41 512K 4k" "$uri" >/dev/null 2>&1 ||
    die "NBD write outside the range failed: $(tail -3 server.log)"
  qemu-io -f raw -c "write -P 0x42 1600K 4k" "$uri" > nbd.out 2>&1 || true
  grep -q "Operation not permitted" nbd.out || die "NBD write inside the range: $(cat nbd.out)"
  qemu-io -f raw -c "read -P 0x41 512K 4k" "$uri" > nbd.out 2>&1 ||
    die "NBD read after the writes: $(cat nbd.out)"
  ! grep -q "Pattern verification failed" nbd.out || die "NBD data wrong: $(cat nbd.out)"
  stop_server
  assert_eq "$(isluice io vm.disk cat 1600K 4096 | md5sum)" "$before" "the protected bytes after the refused NBD write"
else
  echo "qemu-io missing: the NBD part is skipped"
fi

# A filter built against a newer filter API is refused at install, saying so.
api=$(env "${kit[@]}" pkg-config --variable=filter_api_version sluice-filter)
[[ $api =~ ^[0-9]+$ ]] || die "sluice-filter.pc has no filter_api_version"
mkdir -p newer/sluice newer/ex
cp "$root$includedir"/sluice/*.h newer/sluice/
sed -i "s/^#define SL_FILTER_API_VERSION $api\$/#define SL_FILTER_API_VERSION $((api + 1))/" newer/sluice/filter.h
grep -q "^#define SL_FILTER_API_VERSION $((api + 1))\$" newer/sluice/filter.h || die "could not bump the API version"
cc -I newer -shared -fPIC -Wl,-z,defs -o newer/ex/protect.so ex/protect.c
expect_fail "filter protect: built against filter API version $((api + 1)), newer than this sluice's \(version $api\): upgrade sluice" \
  isluice filter install newer/ex/protect.so
cmp -s mods/protect.so ex/protect.so || die "the refused module replaced the trusted one"
# ... and one whose stamp is older (version 0) too, the other way round.
sed -i "s/^#define SL_FILTER_API_VERSION $((api + 1))\$/#define SL_FILTER_API_VERSION 0/" newer/sluice/filter.h
cc -I newer -shared -fPIC -Wl,-z,defs -o newer/ex/protect.so ex/protect.c
expect_fail "built against filter API version 0, older than this sluice's \(version $api\): rebuild it" \
  isluice filter install newer/ex/protect.so
isluice io vm.disk write -s "outside" 0 >/dev/null || die "the trusted protect stopped working"
echo OK
