#!/usr/bin/env bash
# Issue 4, acceptance 3: trusted filter modules.  An installed module loads;
# after one flipped byte, a chmod, a replaced file (same bytes in a new
# inode, or other bytes), or a symbolic link in its place, it is refused with
# a message naming the module and what differs.  A module never installed is
# refused; so is a module directory or manifest that others may write.  In
# every refusal the disk does not open and nothing is written.
. "$(dirname "$0")/../common/lib.sh"
cd "$TMP"
mods=$BUILDDIR/filters
export SLUICE_FILTER_DIR=$TMP/mods
mkdir -m 755 mods

for m in stats crypt; do sluice filter install "$mods/$m.so" >/dev/null; done
[[ $(stat -c %a mods/crypt.so) == 644 ]] || die "installed module mode $(stat -c %a mods/crypt.so)"
grep -q '^crypt [0-9a-f]\{64\} ' mods/MANIFEST || die "no crypt line in the manifest"

sluice create -q -f raw img.raw 4M
head -c 64 /dev/urandom > key
cat > d.disk <<EOF
sluice-disk 1
image img.raw
filter stats print=no
filter crypt key=key
EOF
sluice io d.disk write -s "before any tampering" 0 >/dev/null
assert_eq "$(sluice io d.disk cat 0 20)" "before any tampering" "installed modules load"
sum=$(sha256sum < img.raw)

# refused PATTERN: the disk does not open for reading or writing, stderr
# matches PATTERN, and the image is unchanged.
refused() {
  expect_fail "$1" sluice io d.disk cat 0 20
  expect_fail "$1" sluice io d.disk write -s "must not land" 0
  [[ -z $(cat "$TMP/out") ]] || die "output from a refused disk: $(cat "$TMP/out")"
  assert_eq "$(sha256sum < img.raw)" "$sum" "image checksum after a refused open"
}
# Reinstalling what is there now trusts it again, which proves the refusal
# was about the change.
reinstall() {
  sluice filter install "$mods/crypt.so" >/dev/null
  assert_eq "$(sluice io d.disk cat 0 20)" "before any tampering" "after reinstall"
}

# One flipped byte.
python3 - <<'EOF'
with open('mods/crypt.so', 'r+b') as f:
    f.seek(4000); b = f.read(1); f.seek(4000); f.write(bytes([b[0] ^ 0x01]))
EOF
refused "filter crypt: untrusted: .*crypt\.so.*content changed \(SHA-256"
rc=0; sluice filter list > list.out 2>&1 || rc=$?
grep -Eq '^crypt +UNTRUSTED: .*content changed' list.out || die "filter list does not flag the tampered module: $(cat list.out)"
grep -Eq '^stats ' list.out || die "filter list lost the good module"
[[ $rc -ne 0 ]] || die "filter list exits 0 with an untrusted module"
reinstall

# A mode change, even one that only adds a permission.
chmod 0755 mods/crypt.so
refused "filter crypt: untrusted: .*mode is 0755, was 0644"
chmod 0644 mods/crypt.so
assert_eq "$(sluice io d.disk cat 0 20)" "before any tampering" "mode restored"
chmod 0664 mods/crypt.so
refused "filter crypt: .*mode is 0664"
chmod 0644 mods/crypt.so

# Replaced by a copy of the very same bytes: a new inode.
cp -p mods/crypt.so copy.so
cmp -s copy.so mods/crypt.so || die "copy differs"
mv copy.so mods/crypt.so
refused "filter crypt: untrusted: .*the file was replaced \(inode"
reinstall

# Replaced by other content of the same size (and a new inode).
cp -p mods/crypt.so other.so
python3 - <<'EOF'
with open('other.so', 'r+b') as f:
    f.seek(100); b = f.read(1); f.seek(100); f.write(bytes([b[0] ^ 0x80]))
EOF
mv other.so mods/crypt.so
refused "filter crypt: untrusted: .*replaced.*content changed"
reinstall

# Replaced by another module altogether (a different size).
cp -p "$mods/stats.so" mods/crypt.so
refused "filter crypt: untrusted: .*size is [0-9]+ bytes, was [0-9]+"
reinstall

# A symbolic link to the genuine file is not followed.
mv mods/crypt.so mods/real-crypt.so
ln -s real-crypt.so mods/crypt.so
refused "filter crypt: untrusted: .*symbolic link"
rm mods/crypt.so
mv mods/real-crypt.so mods/crypt.so
reinstall

# Installing something that is not the filter it claims to be is refused
# and leaves the installed module trusted.
mkdir other
cp "$mods/stats.so" other/crypt.so
expect_fail "crypt\.so \(not installed\): filter crypt: module calls itself 'stats'" \
  sluice filter install other/crypt.so
echo "not a module" > other/junk.so
expect_fail "junk\.so \(not installed\): filter junk: cannot load" sluice filter install other/junk.so
! grep -q '^junk ' mods/MANIFEST || die "junk recorded in the manifest"
[[ ! -e mods/junk.so ]] || die "junk copied into the module directory"
assert_eq "$(sluice io d.disk cat 0 20)" "before any tampering" "after refused installs"

# The file is gone.
mv mods/crypt.so gone.so
refused "filter crypt: .*crypt\.so: No such file"
mv gone.so mods/crypt.so

# A module that was never installed (passthru), and one that was removed.
cat > p.disk <<EOF
sluice-disk 1
image img.raw
filter passthru
EOF
expect_fail "filter passthru: not installed" sluice io p.disk cat 0 16
sluice filter remove stats
! sluice filter list | grep -q '^stats ' || die "removed module still listed"
[[ ! -e mods/stats.so ]] || die "removed module file still there"
refused "filter stats: not installed"
sluice filter install "$mods/stats.so" >/dev/null

# A module directory or manifest writable by others than its owner.
chmod 0775 mods
refused "mods: writable by others than its owner \(mode 0775\)"
chmod 0757 mods
refused "mods: writable by others"
chmod 0755 mods
chmod 0666 mods/MANIFEST
refused "MANIFEST: writable by others than its owner"
expect_fail "writable by others" sluice filter install "$mods/crypt.so"
chmod 0644 mods/MANIFEST

# A manifest line edited by hand so it no longer parses.
cp mods/MANIFEST manifest.good
sed -i 's/^crypt \([0-9a-f]*\) .*/crypt \1 notanumber/' mods/MANIFEST
refused "MANIFEST:[0-9]+: malformed manifest line"
cp manifest.good mods/MANIFEST

# After all that, everything works again and the data is intact.
assert_eq "$(sluice io d.disk cat 0 20)" "before any tampering" "final read"
echo ok
