#!/usr/bin/env bash
# Issue 4, first checks of the filter stack through the CLI: trusted module
# install and refusal after tampering, a descriptor with crypt under a
# throttle, no plaintext in the image, --at bypassing the throttle, a wrong
# key reading garbage, and convert through the stack.
. "$(dirname "$0")/../common/lib.sh"
cd "$TMP"
mods=$BUILDDIR/filters
export SLUICE_FILTER_DIR=$TMP/mods
mkdir -m 755 mods

for m in crypt throttle stats; do sluice filter install "$mods/$m.so" >/dev/null; done
sluice filter list | grep -q '^crypt ' || die "crypt not listed after install"

sluice create -q -f raw img.raw 16M
sluice disk create d.disk img.raw
head -c 64 /dev/urandom > key
sluice filter attach d.disk crypt key="$TMP/key"
sluice filter attach d.disk throttle iops=1000
sluice io d.disk write -s "secret plaintext" 4096 >/dev/null
assert_eq "$(sluice io d.disk cat 4096 16)" "secret plaintext" "read back through the stack"
! grep -q "secret plaintext" img.raw || die "plaintext found in the image"
assert_eq "$(sluice io --at throttle d.disk cat 4096 16)" "secret plaintext" "read below the throttle"
sluice convert d.disk plain.raw
assert_eq "$(head -c 4112 plain.raw | tail -c 16)" "secret plaintext" "convert through the stack"

# A wrong key reads garbage, not an error.
head -c 64 /dev/urandom > key
out=$(sluice io d.disk cat 4096 16 | tr -d '\0')
[[ $out != "secret plaintext" ]] || die "wrong key still decrypts"

# A module changed after install is refused, naming it.
python3 -c "
f = open('mods/crypt.so', 'r+b'); f.seek(100); b = f.read(1); f.seek(100); f.write(bytes([b[0] ^ 0xff]))"
expect_fail "crypt.*(untrusted|SHA-256)" sluice io d.disk cat 0 16
# A module never installed is refused: by attach (the descriptor is left
# as it was), and by open when a descriptor names it anyway.
sluice disk create e.disk img.raw
cp e.disk e.orig
expect_fail "filter passthru: not installed" sluice filter attach e.disk passthru
cmp -s e.disk e.orig || die "a refused attach changed the descriptor"
printf 'sluice-disk 1\nimage img.raw\nfilter passthru\n' > f.disk
expect_fail "filter passthru: not installed.*sluice filter install" sluice io f.disk cat 0 16
echo ok
