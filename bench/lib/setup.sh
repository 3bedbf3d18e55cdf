# Sourced by the benchmarks: how they start, the same in each.
#
#   bench_rounds_opts USAGE ARGS...  -r ROUNDS and -n N into $rounds and $n
#        (defaults are the caller's); another option prints "usage: USAGE"
#        and exits 2; BENCH_SHIFT is how many arguments the options took
#   bench_need NAME COMMAND...       exits 1 naming the first COMMAND
#        missing, as "NAME: needs COMMAND"
#   bench_need_rbd NAME SLUICE       exits 1 unless SLUICE has RBD support
#   bench_ceph_start                 a single-node Ceph cluster in $DIR/ceph
#        (scripts/ceph-single-node.sh; run from the top of the tree), its
#        CEPH_CONF exported; from then on the EXIT trap stops every server
#        in PIDS and the cluster, by pid, and removes DIR

bench_rounds_opts() {
  local usage=$1 o OPTIND=1
  shift
  while getopts r:n: o; do
    case $o in
      r) rounds=$OPTARG ;;
      n) n=$OPTARG ;;
      *) echo "usage: $usage" >&2; exit 2 ;;
    esac
  done
  BENCH_SHIFT=$((OPTIND - 1))
}

bench_need() {
  local name=$1 c
  shift
  for c in "$@"; do
    command -v "$c" >/dev/null || { echo "$name: needs $c" >&2; exit 1; }
  done
}

bench_need_rbd() {
  "$2" --version | grep -q '+rbd' || { echo "$1: $2 has no RBD support" >&2; exit 1; }
}

bench_ceph_cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  scripts/ceph-single-node.sh stop "$DIR/ceph" || true
  rm -rf "$DIR"
}

bench_ceph_start() {
  trap bench_ceph_cleanup EXIT
  eval "$(scripts/ceph-single-node.sh start "$DIR/ceph")"
}
