#!/usr/bin/env bash
# sluice demo (the README's first command runs it): a boot storm of 3
# clones without and with its own sluiced.  It exits 0; with the daemon the
# clones' processes read far less from storage than without, and the daemon
# read the boot set about once; the plot is drawn; the private directory
# (socket included) is gone afterwards, and so is the daemon it started.
. "$(dirname "$0")/../common/lib.sh"
require python3
[[ -x $BUILDDIR/sluiced ]] || skip "no sluiced in $BUILDDIR"
args=(-n 3 --size 32M --boot-set 8M --dir "$TMP")
command -v gnuplot >/dev/null && args+=(--plot "$TMP/storm.png")
"$SLUICE" demo "${args[@]}" >out 2>err || die "sluice demo failed: $(tail -5 err)"
cat out
python3 - out <<'PY' || die "the demo's figures do not show the sharing"
import re, sys
text = open(sys.argv[1]).read()
clones = [float(x) for x in re.findall(r"^  clones\s+([\d.]+)", text, re.M)]
daemon = [float(x) for x in re.findall(r"^  sluiced\s+([\d.]+)", text, re.M)]
assert len(clones) == 2 and len(daemon) == 1, text
without, with_ = clones
assert without >= 3 * 8 * 0.9, "without the cache the clones read only %s MiB" % without
assert with_ * 4 < without, "with the cache the clones still read %s MiB" % with_
assert 0 < daemon[0] <= 8 * 1.2, "the daemon read %s MiB for an 8 MiB boot set" % daemon[0]
PY
[[ -z $(ls -A "$TMP" | grep sluice-demo) ]] || die "the demo left its directory behind"
if command -v gnuplot >/dev/null; then
  [[ -s $TMP/storm.png ]] || die "--plot drew nothing"
fi
expect_fail "boot-set must be a multiple of 1M" "$SLUICE" demo --boot-set 1000 --dir "$TMP"
echo PASS
