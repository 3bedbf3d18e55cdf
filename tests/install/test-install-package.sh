#!/usr/bin/env bash
# Issue 17, item 2: the Debian package.  From a copy of the tree (the
# developer's tree and build directories are not touched):
#   * `dpkg-buildpackage -us -uc -b` builds sluice and sluice-dev, and
#     `debian/rules clean` leaves the copy exactly as it was;
#   * lintian reports no errors;
#   * every shared library the binaries need comes from a package in
#     Depends (so apt pulls them on a clean system);
#   * as root, on this machine and in a clean Debian chroot made with
#     debootstrap (where the mirror is reachable; apt must then pull the
#     runtime dependencies itself):
#     `apt-get install ./sluice_*.deb ./sluice-dev_*.deb` -- the
#     postinst trusts every shipped module in /var/lib/sluice/filters
#     through `sluice filter install`, the system sluice attaches one to a
#     disk, the socket unit is enabled and the service is not, and the
#     example filter builds from sluice-dev's copy with plain `make`;
#     then purge, after which nothing of the packages is left (their files,
#     the filter directory, the unit symlinks, dpkg's records).  What is
#     compared is attributed to our packages alone: their dependencies
#     (apt-get satisfy of the packages' Depends) are installed before the
#     "before" snapshot, so what a dependency leaves behind on its own
#     (libibverbs1, pulled by librbd1, adds the rdma group and keeps it) is
#     in both snapshots, and the install itself may pull nothing more.
# The install part skips, saying why, when not root; the host install when
# sluice is already installed on this machine (never purge someone's real
# install), the chroot when there is no debootstrap or no mirror.  Host
# runs are serialized by a lock: two at once would purge each other.
. "$(dirname "$0")/../common/lib.sh"
for c in dpkg-buildpackage dh lintian; do
  command -v "$c" >/dev/null ||
    skip "needs $c (apt-get install dpkg-dev debhelper lintian; scripts/install-deps.sh does)"
done
command -v dpkg-checkbuilddeps >/dev/null && ! dpkg-checkbuilddeps "$SRCDIR/debian/control" 2>"$TMP/bd.err" &&
  skip "build dependencies missing: $(cat "$TMP/bd.err") (scripts/install-deps.sh installs them)"
cd "$TMP"

# --- a copy of the tree: what git tracks (and new files it would) -------
mkdir src
if git -C "$SRCDIR" rev-parse --git-dir >/dev/null 2>&1; then
  (cd "$SRCDIR" && git ls-files -z --cached --others --exclude-standard |
     xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
     tar --null -T - -cf -) | tar -xf - -C src
else
  tar -C "$SRCDIR" --exclude='./build*' --exclude=./.git -cf - . | tar -xf - -C src
fi
(cd src && find . | sort) > tree.before
version=$(dpkg-parsechangelog -l src/debian/changelog -S Version)
arch=$(dpkg-architecture -qDEB_HOST_ARCH)

start=$(date +%s)
(cd src && dpkg-buildpackage -us -uc -b) > build.log 2>&1 ||
  die "dpkg-buildpackage failed: $(tail -30 build.log)"
echo "dpkg-buildpackage: $(( $(date +%s) - start )) s"
deb=$TMP/sluice_${version}_${arch}.deb
devdeb=$TMP/sluice-dev_${version}_all.deb
[[ -f $deb && -f $devdeb ]] || die "no packages: $(ls "$TMP")"
(cd src && debian/rules clean) > clean.log 2>&1 || die "debian/rules clean failed: $(tail clean.log)"
(cd src && find . | sort) > tree.after
diff tree.before tree.after > tree.diff || die "the build left files after clean: $(head -20 tree.diff)"

# --- lintian: no errors (warnings are listed, not fatal) ----------------
rc=0
lintian --no-tag-display-limit "sluice_${version}_${arch}.changes" > lintian.out 2>&1 || rc=$?
(( rc <= 1 )) || die "lintian did not run (exit $rc): $(tail -5 lintian.out)"
errors=$(grep -E '^E: ' lintian.out || true)
[[ -z $errors ]] || die "lintian errors: $errors"
grep -E '^W: ' lintian.out | sed 's/^/lintian warning: /' || true

# --- runtime dependencies: each needed library's package is in Depends --
dpkg-deb -x "$deb" x
owner() { { dpkg -S "$1" 2>/dev/null || true; } | awk -F: 'NR == 1 {print $1}'; }
depends=$(dpkg-deb -f "$deb" Depends)
for f in x/usr/bin/sluice x/usr/sbin/sluiced x/usr/lib/*/sluice/modules/*.so; do
  for so in $(objdump -p "$f" | awk '$1 == "NEEDED" {print $2}'); do
    path=$(ldconfig -p | awk -v s="$so" '$1 == s && !p {print $NF; p = 1}')
    [[ -n $path ]] || die "$f needs $so, which is not on this system"
    pkg=$(owner "$path"); [[ -n $pkg ]] || pkg=$(owner "$(readlink -f "$path")")
    [[ -n $pkg ]] || die "no package owns $path ($so, needed by $f)"
    grep -Eq "(^|, )$pkg( |,|$)" <<<"$depends" || die "$f needs $so from $pkg, not in Depends: $depends"
  done
done
assert_eq "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$devdeb" Package)" "sluice sluice-dev" "packages"

# --- install, use and purge ---------------------------------------------
# install_check ROOT: in ROOT ("" for this machine, else a chroot), install
# both packages with apt-get, check them, purge, and check nothing is left.
# Paths below are inside ROOT; run runs a command there.
install_check() {
  local R=$1 W=/tmp/sluice-package-test
  run() { if [[ -n $R ]]; then chroot "$R" "$@"; else "$@"; fi; }
  apt_() { run env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=600 "$@"; }
  rm -rf "$R$W"; mkdir -p "$R$W"
  cp "$deb" "$devdeb" "$R$W/"
  # Everything but dpkg's and apt's own records and logs, before and after;
  # and what the files in /etc hold, since a user or group a package adds
  # and leaves behind changes /etc/group, not the list of paths (the
  # backups passwd- group- shadow- gshadow- keep the previous contents, and
  # are compared by path only).
  snapshot() {
    { (cd "$R/" && find etc usr lib var/lib -xdev \( -path var/lib/apt -o -path var/lib/dpkg \
        -o -path var/lib/systemd/timers -o -path var/lib/ucf \) -prune -o -print 2>/dev/null)
      (cd "$R/" && find etc -xdev -type f ! -name '*-' ! -name ld.so.cache -print0 2>/dev/null |
        xargs -0 -r md5sum | sed 's/^/content: /')
    } | sort
  }
  # Our packages' dependencies first, so that the snapshots differ only by
  # what installing and purging sluice itself did.  (Dependency strings as
  # dpkg-deb prints them: apt-get satisfy takes them as they are.)
  local deps
  deps=$(dpkg-deb -f "$deb" Pre-Depends Depends | sed -n 's/^[A-Za-z-]*: //p' | paste -sd, -)
  [[ -n $(dpkg-deb -f "$devdeb" Depends | tr -d ' ') ]] &&
    deps="$deps, $(dpkg-deb -f "$devdeb" Depends)"
  apt_ satisfy --no-install-recommends "$deps" > apt-deps.log 2>&1 ||
    die "apt-get satisfy of the packages' dependencies${R:+ in the chroot} failed: $(tail -20 apt-deps.log)"
  snapshot > fs.before
  pending_purge=$R   # until the purge below succeeds (see purge_pending)
  apt_ install --no-install-recommends "$W/$(basename "$deb")" "$W/$(basename "$devdeb")" > apt-install.log 2>&1 ||
    die "apt-get install${R:+ in the chroot} failed: $(tail -20 apt-install.log)"
  # The Depends were all there already: apt installed our two packages and
  # nothing else (anything more would be outside what the snapshots blame).
  local pulled
  pulled=$(sed -n '/^The following NEW packages will be installed:/,/^[^ ]/{/^  /p}' apt-install.log | xargs -n1 | sort | xargs)
  assert_eq "$pulled" "sluice sluice-dev" "packages apt-get install added once the Depends were installed"
  run dpkg -L sluice sluice-dev | sort -u > pkg.files
  for f in /usr/include/sluice/filter.h /usr/share/pkgconfig/sluice-filter.pc \
           /usr/share/man/man3/sluice-filter.3.gz /usr/share/doc/sluice-dev/writing-filters.md.gz; do
    [[ $(run dpkg -S "$f" 2>/dev/null) == "sluice-dev: $f" ]] || die "$f is not sluice-dev's: $(run dpkg -S "$f" 2>&1)"
  done

  # The postinst trusted every shipped module, in the Debian filter
  # directory, and the packaged sluice uses it by default.
  local shipped
  shipped=$(cd "$R"/usr/lib/*/sluice/modules && ls *.so | sed 's/\.so$//' | sort | tr '\n' ' ')
  [[ -n $shipped ]] || die "no modules in the package directory"
  run env -u SLUICE_FILTER_DIR sluice filter --help | grep -q '/var/lib/sluice/filters' ||
    die "the packaged sluice's default filter directory: $(run sluice filter --help | tail -1)"
  run env -u SLUICE_FILTER_DIR sluice filter list > list.out 2>&1 || die "installed modules do not verify: $(cat list.out)"
  assert_eq "$(awk '{print $1}' list.out | sort | tr '\n' ' ')" "$shipped" "trusted modules after install"
  assert_eq "$(stat -c '%a %U' "$R"/var/lib/sluice/filters "$R"/var/lib/sluice/filters/MANIFEST | tr '\n' ' ')" \
    "755 root 644 root " "filter directory and manifest"
  head -c 64 /dev/urandom > "$R$W/key"
  run env -u SLUICE_FILTER_DIR sh -ec "cd $W
    sluice create -q -f qcow2 vm.qcow2 8M
    sluice disk create vm.disk vm.qcow2
    sluice filter attach vm.disk crypt key=$W/key
    sluice io vm.disk write -s 'from the package' 0 >/dev/null" > use.log 2>&1 ||
    die "the packaged sluice cannot use crypt: $(cat use.log)"
  assert_eq "$(run env -u SLUICE_FILTER_DIR sluice io "$W/vm.disk" cat 0 16)" "from the package" "I/O through crypt"
  # Units: the socket enabled, the service not (it starts on first use).
  [[ -f $R/lib/systemd/system/sluiced.service && -f $R/lib/systemd/system/sluiced.socket ]] ||
    die "units not installed"
  [[ -L $R/etc/systemd/system/sockets.target.wants/sluiced.socket ]] || die "sluiced.socket is not enabled"
  [[ ! -e $R/etc/systemd/system/multi-user.target.wants/sluiced.service ]] || die "sluiced.service is enabled"
  # sluice-dev: the example builds with the system's pkg-config alone.
  if run sh -c 'command -v make && command -v cc && command -v pkg-config' >/dev/null 2>&1; then
    run env -u SLUICE_FILTER_DIR sh -ec "cd $W
      cp -r /usr/share/doc/sluice-dev/examples/filter-protect ex
      make -C ex
      mkdir -m 755 mods
      SLUICE_FILTER_DIR=$W/mods sluice filter install ex/protect.so" > make.log 2>&1 ||
      die "the example does not build or install against sluice-dev: $(cat make.log)"
  else
    echo "note: no compiler${R:+ in the chroot}: the example is not built there"
  fi
  rm -rf "$R$W"

  # --- purge: nothing left ------------------------------------------------
  apt_ purge sluice sluice-dev > apt-purge.log 2>&1 || die "apt-get purge failed: $(tail -20 apt-purge.log)"
  pending_purge=none
  for p in sluice sluice-dev; do
    ! run dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q installed || die "$p still installed"
    [[ ! -e $R/var/lib/dpkg/info/$p.list ]] || die "dpkg still records $p"
  done
  local left new ours
  left=$(while read -r f; do
           if [[ -e $R$f && ! -d $R$f ]]; then echo "$f"; fi
         done < pkg.files)
  [[ -z $left ]] || die "files of the packages left after purge: $left"
  [[ ! -e $R/var/lib/sluice ]] || die "/var/lib/sluice left after purge: $(find "$R/var/lib/sluice")"
  snapshot > fs.after
  new=$(comm -13 fs.before fs.after)
  ours=$(grep -i sluice <<<"$new" || true)
  [[ -z $ours ]] || die "left after purge: $ours"
  if [[ -n $R ]]; then
    # A chroot has nothing else going on: nothing new at all may remain,
    # and no file in /etc may hold anything else (the dependencies were
    # installed before the first snapshot and stay).
    [[ -z $new ]] || die "left in the chroot after purge: $(head -20 <<<"$new")"
    local gone
    gone=$(comm -23 fs.before fs.after)
    [[ -z $gone ]] || die "changed or removed in the chroot by install and purge: $(head -20 <<<"$gone")"
  else
    [[ -z $new ]] || echo "note: paths that appeared meanwhile (not the package's): $(head -5 <<<"$new")"
  fi
}

[[ $(id -u) -eq 0 ]] || skip "built and lintian-clean; install and purge need root"
# If the test fails between install and purge, purge what it installed
# (and only then: never a sluice someone else installed later).
pending_purge=none
purge_pending() {
  [[ $pending_purge == none ]] && return 0
  ${pending_purge:+chroot "$pending_purge"} env DEBIAN_FRONTEND=noninteractive \
    apt-get -y -q -o DPkg::Lock::Timeout=600 purge sluice sluice-dev
}
cleanup_push purge_pending
command -v apt-get >/dev/null || skip "built and lintian-clean; no apt-get to install with"
ran=()

# On this machine, unless sluice is installed here already (never purge
# someone's real install).  Serialized: two runs at once would purge each
# other's packages.
exec 9>/run/lock/sluice-test-install-package.lock
flock -w 900 9 || die "another package test holds the lock for 15 minutes"
host_why=""
for p in sluice sluice-dev; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q installed; then
    host_why="$p is already installed here, not purging it"
  fi
done
[[ -e /var/lib/sluice ]] && host_why="/var/lib/sluice exists already"
if [[ -z $host_why ]]; then
  install_check ""
  ran+=("installed and purged on this machine")
else
  echo "note: not installed on this machine: $host_why"
fi
exec 9>&-

# On a clean Debian 12 made with debootstrap (minbase) from this machine's
# mirror: apt must pull the runtime dependencies itself, from the
# packages' Depends (minbase lacks libfuse3-3 and libssl3, and Ceph's
# client libraries).  About 3 minutes; needs the mirror.
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | grep -v security | head -1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
chroot_why=""
if ! command -v debootstrap >/dev/null; then
  chroot_why="no debootstrap"
elif [[ -z $codename ]]; then
  chroot_why="cannot tell this system's Debian release"
elif ! timeout 20 bash -c "exec 3<>/dev/tcp/$(sed -E 's|^[a-z]+://([^/:]+).*|\1|' <<<"$mirror")/80" 2>/dev/null; then
  chroot_why="the mirror $mirror is not reachable"
fi
if [[ -z $chroot_why ]]; then
  root=$TMP/chroot
  start=$(date +%s)
  debootstrap --variant=minbase "$codename" "$root" "$mirror" > debootstrap.log 2>&1 ||
    die "debootstrap $codename from $mirror failed: $(tail -5 debootstrap.log)"
  echo "debootstrap: $(( $(date +%s) - start )) s"
  mount -t proc proc "$root/proc"
  cleanup_push "umount -l $root/proc"
  for p in libfuse3-3 libssl3; do
    ! chroot "$root" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
      die "the minbase chroot has $p already: the dependency check would prove nothing"
  done
  chroot "$root" apt-get -q update > apt-update.log 2>&1 || die "apt-get update in the chroot: $(tail -5 apt-update.log)"
  install_check "$root"
  grep -q "libfuse3-3" apt-deps.log ||
    die "apt did not pull libfuse3-3 into the chroot for the packages' Depends: $(tail -20 apt-deps.log)"
  umount -l "$root/proc"
  ran+=("installed and purged in a $codename chroot")
else
  echo "note: no clean-chroot install: $chroot_why"
fi
(( ${#ran[@]} > 0 )) || skip "built and lintian-clean; not installed anywhere: $host_why; $chroot_why"
printf 'OK: %s\n' "${ran[@]}"
