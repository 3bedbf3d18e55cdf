#!/usr/bin/env bash
# sluice sim on binary traces cut short: the message names the file, the
# record and how much of it there is.  The records are cut from the traces
# shipped beside the project ($SHARED/traces, i.e. ../shared); a clone with
# nothing beside it skips, CI (which has them) runs it.
source "$SRCDIR/tests/common/lib.sh"
vscsi=$SHARED/traces/cloudphysics/cloudPhysicsIO.vscsi
oracle=$SHARED/traces/cloudphysics/cloudPhysicsIO.oracleGeneral.bin
for f in "$vscsi" "$oracle"; do
  [[ -r $f ]] || skip "the shipped trace $f is absent (traces live in ../shared beside the project; configure with -Dshared_dir=DIR to point elsewhere)"
done
head -c 40 "$vscsi" > "$TMP/cut.vscsi"
expect_fail "cut.vscsi: record 1 is truncated \\(8 of 32 bytes\\)" \
  sluice sim --trace "$TMP/cut.vscsi" --format vscsi --policy lru
head -c 30 "$oracle" > "$TMP/cut.bin"
expect_fail "cut.bin: record 1 is truncated \\(6 of 24 bytes\\)" \
  sluice sim --trace "$TMP/cut.bin" --format oracle --policy lru
echo OK
