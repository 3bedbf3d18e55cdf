#!/usr/bin/env bash
# Acceptance 1 of issue 3: FIFO, LRU and Belady reproduce ANCHORS.md to four
# decimals, ARC, S3-FIFO (both thresholds) and W-TinyLFU (issue 15,
# libCacheSim's form) within 0.5% relative; LIRS
# (written from the paper, not after libCacheSim) within 2% wherever the
# cache holds 10 blocks or more.  The expected values are read from
# ANCHORS.md by anchors.py.  With "all" as the argument every table is
# checked (suite slow: the two large ARC traces take a while); without,
# every table except those two.
source "$SRCDIR/tests/common/lib.sh"
require python3
anchors=$SHARED/traces/ANCHORS.md
[[ -r $anchors ]] || skip "the shipped anchors $anchors are absent (traces live in ../shared beside the project; configure with -Dshared_dir=DIR to point elsewhere)"
python3 "$SRCDIR/tests/sim/anchors.py" "$SLUICE" "$anchors" "$SHARED/traces" \
  "${1:-fast}" || die "miss ratios disagree with ANCHORS.md"
