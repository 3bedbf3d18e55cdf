#!/usr/bin/env bash
# Issue 10, items 3 and 6: sluice against qemu-img/qemu-io on every kind of
# the corruption corpus (qcow2-corrupt.py: a clean qemu-img image with an
# internal snapshot, damaged one way per kind).  On copies of each damaged
# image, both tools run info, read, write, check and check -r all:
#   - sluice never crashes or hangs (every command under a timeout);
#   - sluice's writes do no more damage than QEMU's (qemu-img check counts
#     no more corruptions on sluice's copy than on QEMU's or than before),
#     and where QEMU prevents a write on metadata and marks the image
#     corrupt, sluice does too;
#   - check: the same verdict as qemu-img check (exit 0 clean, 1 check
#     failed, 2 corrupt, 3 leaks);
#   - check -r all: never exits 0 while qemu-img check still finds errors,
#     and the guest then reads at least as much of the written data as from
#     QEMU's repair of the same image.
# Kinds where sluice knowingly differs are listed in KNOWN with the reason;
# the test fails if such a kind stops differing (so the list stays true).
. "$(dirname "$0")/../common/lib.sh"
require qemu-img qemu-io python3 timeout
cd "$TMP"

gen="$SRCDIR/tests/cli/qcow2-corrupt.py"
python3 "$gen" base base.qcow2
only=${CORRUPT_KINDS:-}   # a space-separated subset, for debugging

# Known, deliberate differences of `sluice check` from qemu-img check's exit
# code: KIND -> "sluice-exit qemu-exit reason".
declare -A KNOWN=(
)

# srun CMD...: run a sluice command; print its exit code; a signal or a
# timeout fails the test.
srun() {
  local rc=0
  timeout -k 5 60 "$@" >"$TMP/s.out" 2>"$TMP/s.err" || rc=$?
  ((rc != 124 && rc != 137)) || die "$kind: timed out: $*"
  ((rc < 128)) || die "$kind: killed by signal $((rc - 128)): $* ($(head -c 300 "$TMP/s.err"))"
  echo "$rc"
}
# qrun CMD...: the same for QEMU's tools, which may crash on their own; they
# run without glibc's MALLOC_PERTURB_ (meson sets it): on some damaged
# images qemu-io 7.2 acts on uninitialised memory, and the oracle must not
# vary from run to run.
qrun() {
  local rc=0
  timeout -k 5 60 env -u MALLOC_PERTURB_ "$@" >"$TMP/q.out" 2>"$TMP/q.err" || rc=$?
  echo "$rc"
}
qcheck() { qrun qemu-img check "$1"; }
# qjson IMAGE: "EXIT CORRUPTIONS" of qemu-img check (CORRUPTIONS 1000000
# when it could not check at all).
qjson() {
  local rc=0 out n
  out=$(timeout -k 5 60 env -u MALLOC_PERTURB_ qemu-img check --output=json "$1" 2>/dev/null) || rc=$?
  n=$(sed -n 's/^ *"corruptions": \([0-9]*\).*/\1/p' <<<"$out")
  echo "$rc ${n:-0}"
  [[ -n $out ]] || echo "$rc 1000000"
}
corruptions() { qjson "$1" | tail -1 | cut -d' ' -f2; }
corrupt_bit() { # 1 if the header's incompatible bit 1 ("corrupt") is set
  local b
  b=$(od -An -t u1 -j 79 -N 1 "$1" | tr -d ' ')
  echo $(( (${b:-0} >> 1) & 1 ))
}
# recovered IMAGE: how many 4 KiB blocks of the written data the guest
# reads back, through qemu-img or, where it cannot open the image, sluice.
recovered() {
  rm -f "$TMP/r.raw"
  if ! timeout -k 5 60 env -u MALLOC_PERTURB_ qemu-img convert -U -O raw "$1" "$TMP/r.raw" 2>/dev/null; then
    rm -f "$TMP/r.raw"
    timeout -k 5 60 "$SLUICE" convert -O raw "$1" "$TMP/r.raw" 2>/dev/null ||
      rm -f "$TMP/r.raw"
  fi
  python3 "$gen" recovered "$TMP/r.raw"
}

writes=("write -P 0x66 4096 4096" "write -P 0x67 3M 64k" "write -P 0x68 5M 4096")
failures=0 kinds=0
for kind in $(python3 "$gen" kinds); do
  [[ -z $only || " $only " == *" $kind "* ]] || continue
  kinds=$((kinds + 1))
  cp base.qcow2 "$kind.qcow2"
  python3 "$gen" apply "$kind" "$kind.qcow2"
  for i in s q; do cp "$kind.qcow2" "$i.qcow2"; done

  # info and reads: only that sluice survives them.
  srun "$SLUICE" info "$kind.qcow2" >/dev/null
  srun "$SLUICE" info --output=json "$kind.qcow2" >/dev/null
  srun "$SLUICE" io -r "$kind.qcow2" read 0 8M >/dev/null
  srun "$SLUICE" io -r "$kind.qcow2" cat 0 1M >/dev/null

  # writes, on copies
  read -r q_rc before < <(qjson "$kind.qcow2" | tail -1)
  sargs=() qargs=()
  for w in "${writes[@]}"; do sargs+=(-c "$w"); qargs+=(-c "$w"); done
  srun "$SLUICE" io "${sargs[@]}" s.qcow2 >/dev/null
  qrun qemu-io "${qargs[@]}" q.qcow2 >/dev/null
  sc=$(corruptions s.qcow2) qc=$(corruptions q.qcow2)
  if ((sc > before && sc > qc)); then
    echo "FAIL $kind: after sluice's writes qemu-img check counts $sc corruptions (before: $before, after QEMU's writes: $qc)" >&2
    failures=$((failures + 1))
  fi
  # Where QEMU prevented a write on metadata and marked the image corrupt,
  # sluice marks it too, or (refusing the open) wrote nothing at all.
  if [[ $(corrupt_bit q.qcow2) == 1 && $(corrupt_bit s.qcow2) == 0 ]] &&
     grep -q "Preventing invalid write" "$TMP/q.err" &&
     ! cmp -s s.qcow2 "$kind.qcow2"; then
    echo "FAIL $kind: QEMU prevented a write on metadata and marked the image corrupt; sluice did not" >&2
    failures=$((failures + 1))
  fi

  # check: the same verdict
  s_rc=$(srun "$SLUICE" check "$kind.qcow2")
  if [[ -n ${KNOWN[$kind]:-} ]]; then
    read -r ks kq reason <<<"${KNOWN[$kind]}"
    [[ $s_rc == "$ks" && $q_rc == "$kq" ]] ||
      { echo "FAIL $kind: known difference ($reason) no longer holds: sluice $s_rc, qemu-img $q_rc" >&2; failures=$((failures + 1)); }
  elif [[ $s_rc != "$q_rc" ]]; then
    echo "FAIL $kind: sluice check exits $s_rc, qemu-img check $q_rc" >&2
    failures=$((failures + 1))
  fi

  # check -r all on copies: honest exit, no less data than QEMU recovers
  for i in s q; do cp "$kind.qcow2" "r$i.qcow2"; done
  sr=$(srun "$SLUICE" check -r all rs.qcow2)
  qrun qemu-img check -r all rq.qcow2 >/dev/null
  after=$(qcheck rs.qcow2)
  if [[ $sr == 0 && $after != 0 ]]; then
    echo "FAIL $kind: sluice check -r all exits 0 but qemu-img check then exits $after" >&2
    failures=$((failures + 1))
  fi
  rs=$(recovered rs.qcow2) rq=$(recovered rq.qcow2)
  if ((rs < rq)); then
    echo "FAIL $kind: after repair the guest reads $rs blocks of its data from sluice's copy, $rq from QEMU's" >&2
    failures=$((failures + 1))
  fi
  echo "$kind: check sluice=$s_rc qemu=$q_rc; repair sluice=$sr (then qemu-img check $after); recovered sluice=$rs qemu=$rq; write corruptions sluice=$sc qemu=$qc before=$before"
done
[[ $kinds -ge 20 || -n $only ]] || die "only $kinds corruption kinds"
((failures == 0)) || die "$failures differences (see above)"
echo ok
