#!/usr/bin/env bash
# Issue 17, item 1: `meson install --destdir` lays out everything -- sluice,
# sluiced, every shipped filter module in LIBDIR/sluice/modules, the man
# pages, the systemd units, the filter kit (<sluice/filter.h>, what it
# includes, sluice-filter.pc) -- and its install step trusts each module
# through `sluice filter install` into the filter directory *inside* the
# scratch root, writing nothing outside it.  Then the installed sluiced
# starts on a private socket, and the installed sluice, pointed at that
# directory, talks to it, attaches every shipped filter to one disk and
# moves data through the whole stack.
#
# The expected lists come from the source tree (a directory per filter
# under filters/, a page per command under docs/man/), not from meson's own
# install plan, so a filter or page the build forgets to install fails here.
. "$(dirname "$0")/../common/lib.sh"
. "$(dirname "$0")/stage.sh"
require cc
cd "$TMP"

# The real filter directory must not be touched by a staged install.
real_before=absent
[[ -e $filter_dir ]] && real_before=$(ls -la --time-style=full-iso "$filter_dir" | md5sum)

root=$TMP/root
stage_install "$root"

real_after=absent
[[ -e $filter_dir ]] && real_after=$(ls -la --time-style=full-iso "$filter_dir" | md5sum)
assert_eq "$real_after" "$real_before" "the real $filter_dir after a --destdir install"

need() { [[ -f $root$1 ]] || die "not installed: $1"; }
need "$bindir/sluice"; need "$sbindir/sluiced"
[[ -x $root$bindir/sluice && -x $root$sbindir/sluiced ]] || die "sluice or sluiced not executable"
modules=()
for d in "$SRCDIR"/filters/*/; do
  m=$(basename "$d")
  [[ -f $d/$m.c ]] || continue
  modules+=("$m")
  need "$moddir/$m.so"
  need "$mandir/man1/sluice-filter-$m.1"
done
(( ${#modules[@]} >= 8 )) || die "only ${#modules[@]} filters found under $SRCDIR/filters"
[[ ! -e $root$moddir/trace-partial.so ]] || die "the test double trace-partial was installed"
for page in "$SRCDIR"/docs/man/*.[0-9]; do
  p=$(basename "$page"); need "$mandir/man${p##*.}/$p"
done
need "$includedir/sluice/filter.h"; need "$includedir/sluice/image.h"
# The kit's page renders cleanly (the others are test-cli-man-pages').
if command -v man >/dev/null; then
  LC_ALL=C.UTF-8 man --warnings -l "$root$mandir/man3/sluice-filter.3" >/dev/null 2>man.warn ||
    die "man failed on sluice-filter.3"
  [[ ! -s man.warn ]] || die "troff warnings in sluice-filter.3: $(cat man.warn)"
fi
need "$datadir/pkgconfig/sluice-filter.pc"
units=$(find "$root" -path '*/systemd/system/*' -type f -printf '%f\n' | sort | tr '\n' ' ')
assert_eq "$units" "sluiced.service sluiced.socket " "installed systemd units"
grep -q "^ExecStart=$sbindir/sluiced " "$(find "$root" -name sluiced.service)" ||
  die "sluiced.service does not start $sbindir/sluiced"
# Nothing outside the prefix but the units and (when it is outside) the
# filter directory.
stray=$(cd "$root" && find . -type f | sed 's/^\.//' |
        grep -v "^$prefix/" | grep -v '/systemd/system/' | grep -v "^$filter_dir/" || true)
[[ -z $stray ]] || die "installed outside the prefix: $stray"

# The public headers are self-contained: each compiles alone, in strict
# C11 and as C++, with nothing but the installed include directory.
for h in filter.h image.h; do
  printf '#include <sluice/%s>\n' "$h" > inc.c
  cc -std=c11 -Wall -Wextra -Werror -pedantic -I"$root$includedir" -c inc.c -o inc.o ||
    die "<sluice/$h> does not compile on its own from $includedir"
  if command -v c++ >/dev/null; then
    cp inc.c inc.cc
    c++ -Wall -Wextra -Werror -I"$root$includedir" -c inc.cc -o inc.o ||
      die "<sluice/$h> does not compile as C++"
  fi
done
# The .pc points at those headers (through the staged root).
cflags=$(PKG_CONFIG_PATH=$root$datadir/pkgconfig PKG_CONFIG_SYSROOT_DIR=$root \
         pkg-config --cflags sluice-filter | xargs)
assert_eq "$cflags" "-I$root$includedir" "pkg-config --cflags sluice-filter"
api=$(sed -n 's/^#define SL_FILTER_API_VERSION \([0-9]*\)$/\1/p' "$SRCDIR/include/sluice/filter.h")
assert_eq "$(PKG_CONFIG_PATH=$root$datadir/pkgconfig pkg-config --variable=filter_api_version sluice-filter)" \
  "$api" "filter_api_version in sluice-filter.pc"

# The install step trusted every shipped module, in the root's filter
# directory, through the manifest.
export SLUICE_FILTER_DIR=$root$filter_dir
isluice() { "$root$bindir/sluice" "$@"; }
if [[ $trust != true ]]; then
  [[ ! -e $SLUICE_FILTER_DIR ]] || die "-Dtrust_modules=false, yet $filter_dir was made"
  echo "-Dtrust_modules=false: trusting the modules by hand"
  mkdir -p -m 755 "$SLUICE_FILTER_DIR"
  for m in "${modules[@]}"; do isluice filter install "$root$moddir/$m.so" >/dev/null; done
fi
[[ -f $SLUICE_FILTER_DIR/MANIFEST ]] || die "no MANIFEST in $filter_dir under the root"
isluice filter list > list.out || die "installed modules do not verify: $(cat list.out)"
for m in "${modules[@]}"; do
  grep -q "^$m " "$SLUICE_FILTER_DIR/MANIFEST" || die "$m is not in the manifest"
  grep -q "^$m " list.out || die "$m is not listed by the installed sluice"
  cmp -s "$root$moddir/$m.so" "$SLUICE_FILTER_DIR/$m.so" || die "trusted $m.so differs from the shipped one"
done
! grep -q UNTRUSTED list.out || die "untrusted modules: $(cat list.out)"

# The installed sluiced starts (on a private socket) and the installed
# sluice talks to it; the cache filter below is pointed at it.
sock=$TMP/sluiced.sock
"$root$sbindir/sluiced" --socket "$sock" --memory 4M --pidfile "$TMP/sluiced.pid" --daemon \
  2>sluiced.log || die "the installed sluiced does not start: $(cat sluiced.log)"
pid=$(cat "$TMP/sluiced.pid")
cleanup_push "kill $pid"
isluice cache stats --socket "$sock" > stats.out 2>&1 ||
  die "the installed sluice cannot talk to the installed sluiced: $(cat stats.out)"

# Every shipped filter on one disk, with the parameters it requires.
isluice create -q -f qcow2 vm.qcow2 8M
isluice create -q -f raw replica.raw 8M
head -c 64 /dev/urandom > vm.key
isluice disk create vm.disk vm.qcow2
declare -A params=(
  [crypt]="key=$TMP/vm.key" [mirror]="target=$TMP/replica.raw"
  [trace]="log=$TMP/trace.log" [throttle]="iops=100000"
  [fault]="prob=0" [stats]="print=no" [cache]="socket=$sock"
)
for m in "${modules[@]}"; do
  # shellcheck disable=SC2086
  isluice filter attach vm.disk "$m" ${params[$m]:-} 2>attach.err ||
    die "the installed sluice cannot attach $m: $(cat attach.err)"
done
stack=$(isluice filter list vm.disk | awk '{print $1}' | sort | tr '\n' ' ')
assert_eq "$stack" "$(printf '%s\n' "${modules[@]}" | sort | tr '\n' ' ')" "the stack"
isluice io vm.disk write -s "through every filter" 65536 >/dev/null 2>io.err ||
  die "write through the stack failed: $(cat io.err)"
assert_eq "$(isluice io vm.disk cat 65536 20 2>/dev/null)" "through every filter" "read back through the stack"
# crypt is in it (no plaintext below), mirror too (the replica has the
# image's bytes), trace logged.
! isluice io vm.qcow2 cat 65536 20 2>/dev/null | grep -q "through every filter" || die "plaintext in the image"
cmp -s <(isluice io vm.qcow2 cat 65536 4096) <(isluice io replica.raw cat 65536 4096) ||
  die "the mirror's replica does not hold what the image holds"
[[ -s trace.log ]] || die "the trace filter logged nothing"
kill -TERM "$pid"
for ((i = 0; i < 200; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
! kill -0 "$pid" 2>/dev/null || die "the installed sluiced did not stop on SIGTERM"
echo OK
