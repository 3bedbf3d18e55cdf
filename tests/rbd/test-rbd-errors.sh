#!/bin/bash
# Issue 16: what goes wrong with an RBD name gives a clear message naming
# the thing and a non-zero exit, never a hang or a crash: a malformed name,
# a missing pool, image or snapshot, a wrong key, an unknown user, a
# monitor that does not answer (bounded by client_mount_timeout: 30 s by
# default, shorter when the name sets it), a snapshot opened for writing.
source "$(dirname "$0")/../common/lib.sh"
source "$(dirname "$0")/../common/ceph.sh"
ceph_start
cd "$TMP"
rbd create --size 4M "$POOL/a"
rbd snap create "$POOL/a@s" 2>/dev/null

expect_fail "pool name is required" sluice info rbd:nopool
expect_fail "image name is empty" sluice info "rbd:$POOL/"
expect_fail "option 'conf' has no value" sluice info "rbd:$POOL/a:conf"
expect_fail "Ceph pool 'nopool' does not exist" sluice info rbd:nopool/a
expect_fail "RBD image 'missing' does not exist in pool '$POOL'" sluice info "rbd:$POOL/missing"
expect_fail "RBD image 'a' has no snapshot 'nosnap'" sluice info "rbd:$POOL/a@nosnap"
expect_fail "RBD image 'missing' does not exist" sluice convert -O raw "rbd:$POOL/missing" out.raw
[[ ! -e out.raw ]] || die "convert left an output behind for a missing source"
expect_fail "is the same RBD image as rbd:$POOL/a@s" \
  sluice convert -f raw -O raw "rbd:$POOL/a@s" "rbd:$POOL/a"
expect_fail "snapshot 's' is read-only" sluice io -f raw "rbd:$POOL/a@s" write 0 4096
expect_fail "cannot read the Ceph configuration /nonexistent.conf" \
  sluice info "rbd:$POOL/a:conf=/nonexistent.conf"
expect_fail "invalid Ceph option no_such_option" sluice info "rbd:$POOL/a:no_such_option=1"

# A user Ceph knows, with the wrong key; a user it does not know.
ceph auth get-or-create client.bob mon 'profile rbd' osd 'profile rbd' >/dev/null
printf '[client.bob]\n\tkey = %s\n' "$(ceph-authtool --gen-print-key)" >bad.keyring
expect_fail "Ceph refused client.bob: authentication failed" \
  sluice info "rbd:$POOL/a:id=bob:keyring=$TMP/bad.keyring"
expect_fail "Ceph refused client.nobody: authentication failed" \
  sluice info "rbd:$POOL/a:id=nobody"
# The right key works (the message above is about the key, not the user).
ceph auth get client.bob >good.keyring 2>/dev/null
sluice info "rbd:$POOL/a:id=bob:keyring=$TMP/good.keyring" >/dev/null ||
  die "client.bob with its key cannot open the image"

# No monitor: a closed port.  Bounded by the name's timeout, and by
# sluice's default of 30 s when neither ceph.conf nor the name sets one.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
grep -v -e 'client mount timeout' -e 'rados mon op timeout' "$CEPH_CONF" |
  sed "s/^mon host = .*/mon host = v2:127.0.0.1:$port/" >dead.conf
t0=$SECONDS
expect_fail "no Ceph monitor answered within 3 s" \
  timeout 60 "$SLUICE" info "rbd:$POOL/a:conf=$TMP/dead.conf:client_mount_timeout=3"
((SECONDS - t0 < 30)) || die "the 3 s monitor timeout took $((SECONDS - t0)) s"
t0=$SECONDS
expect_fail "no Ceph monitor answered within 30 s" \
  timeout 120 "$SLUICE" serve --nbd "unix:$TMP/x.sock" "rbd:$POOL/a:conf=$TMP/dead.conf"
((SECONDS - t0 < 100)) || die "the default monitor timeout took $((SECONDS - t0)) s"
echo "PASS: $TEST_NAME"
