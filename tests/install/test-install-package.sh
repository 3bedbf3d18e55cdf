#!/usr/bin/env bash
# Issue 17, item 2: the Debian package.  From a copy of the tree (the
# developer's tree and build directories are not touched):
#   * `dpkg-buildpackage -us -uc -b` builds sluice and sluice-dev, and
#     `debian/rules clean` leaves the copy exactly as it was;
#   * lintian reports no errors;
#   * every shared library the binaries need comes from a package in
#     Depends (so apt pulls them on a clean system);
#   * as root: `apt-get install ./sluice_*.deb ./sluice-dev_*.deb` -- the
#     postinst trusts every shipped module in /var/lib/sluice/filters
#     through `sluice filter install`, the system sluice attaches one to a
#     disk, the socket unit is enabled and the service is not, and the
#     example filter builds from sluice-dev's copy with plain `make`;
#     then purge, after which nothing of the packages is left (their files,
#     the filter directory, the unit symlinks, dpkg's records).
# The install part skips, saying why, when not root or when sluice is
# already installed on this machine (never purge someone's real install).
# Runs are serialized by a lock: two runs at once would purge each other.
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

# --- install and purge on this machine -----------------------------------
[[ $(id -u) -eq 0 ]] || skip "built and lintian-clean; install and purge need root"
command -v apt-get >/dev/null || skip "built and lintian-clean; no apt-get to install with"
exec 9>/run/lock/sluice-test-install-package.lock
flock -w 900 9 || die "another package test holds the lock for 15 minutes"
for p in sluice sluice-dev; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q installed; then
    skip "built and lintian-clean; $p is already installed here, not purging it"
  fi
done
[[ ! -e /var/lib/sluice ]] || skip "built and lintian-clean; /var/lib/sluice exists already"

roots=(/etc /usr /lib /var/lib)
snapshot() { find "${roots[@]}" -xdev \( -path /var/lib/apt -o -path /var/lib/dpkg -o \
  -path /var/lib/systemd/timers \) -prune -o -print 2>/dev/null |
  sort; }
snapshot > fs.before
apt_() { DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=600 "$@"; }
cleanup_push "DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=600 purge sluice sluice-dev"
apt_ install --no-install-recommends "$deb" "$devdeb" > apt-install.log 2>&1 ||
  die "apt-get install failed: $(tail -20 apt-install.log)"
dpkg -L sluice sluice-dev | sort -u > pkg.files
for f in /usr/include/sluice/filter.h /usr/share/pkgconfig/sluice-filter.pc \
         /usr/share/man/man3/sluice-filter.3.gz /usr/share/doc/sluice-dev/writing-filters.md.gz; do
  [[ $(dpkg -S "$f" 2>/dev/null) == "sluice-dev: $f" ]] || die "$f is not sluice-dev's: $(dpkg -S "$f" 2>&1)"
done

# The postinst trusted every shipped module, in the Debian filter
# directory, and the system sluice uses it by default.
unset SLUICE_FILTER_DIR
shipped=$(cd /usr/lib/*/sluice/modules && ls *.so | sed 's/\.so$//' | sort | tr '\n' ' ')
[[ -n $shipped ]] || die "no modules in the package directory"
/usr/bin/sluice filter --help | grep -q '/var/lib/sluice/filters' ||
  die "the packaged sluice's default filter directory: $(/usr/bin/sluice filter --help | tail -1)"
/usr/bin/sluice filter list > list.out || die "installed modules do not verify: $(cat list.out)"
assert_eq "$(awk '{print $1}' list.out | sort | tr '\n' ' ')" "$shipped" "trusted modules after install"
assert_eq "$(stat -c '%a %U' /var/lib/sluice/filters /var/lib/sluice/filters/MANIFEST | tr '\n' ' ')" \
  "755 root 644 root " "filter directory and manifest"
/usr/bin/sluice create -q -f qcow2 vm.qcow2 8M
/usr/bin/sluice disk create vm.disk vm.qcow2
head -c 64 /dev/urandom > key
/usr/bin/sluice filter attach vm.disk crypt key="$TMP/key" || die "the packaged sluice cannot attach crypt"
/usr/bin/sluice io vm.disk write -s "from the package" 0 >/dev/null
assert_eq "$(/usr/bin/sluice io vm.disk cat 0 16)" "from the package" "I/O through crypt"
# Units: the socket enabled, the service not (it starts on first use).
[[ -f /lib/systemd/system/sluiced.service && -f /lib/systemd/system/sluiced.socket ]] ||
  die "units not installed"
[[ -L /etc/systemd/system/sockets.target.wants/sluiced.socket ]] || die "sluiced.socket is not enabled"
[[ ! -e /etc/systemd/system/multi-user.target.wants/sluiced.service ]] || die "sluiced.service is enabled"
# sluice-dev: the example builds with the system's pkg-config alone.
if command -v make >/dev/null && command -v cc >/dev/null && command -v pkg-config >/dev/null; then
  cp -r /usr/share/doc/sluice-dev/examples/filter-protect ex
  make -C ex > make.log 2>&1 || die "the example does not build against sluice-dev: $(cat make.log)"
  SLUICE_FILTER_DIR=$TMP/mods /usr/bin/sluice filter install ex/protect.so >/dev/null ||
    die "the packaged sluice refuses the example built against sluice-dev"
fi

# --- purge: nothing left --------------------------------------------------
apt_ purge sluice sluice-dev > apt-purge.log 2>&1 || die "apt-get purge failed: $(tail -20 apt-purge.log)"
for p in sluice sluice-dev; do
  ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q installed || die "$p still installed"
  [[ ! -e /var/lib/dpkg/info/$p.list ]] || die "dpkg still records $p"
done
left=$(while read -r f; do
         if [[ -e $f && ! -d $f ]]; then echo "$f"; fi
       done < pkg.files)
[[ -z $left ]] || die "files of the packages left after purge: $left"
[[ ! -e /var/lib/sluice ]] || die "/var/lib/sluice left after purge: $(find /var/lib/sluice)"
snapshot > fs.after
new=$(comm -13 fs.before fs.after)
ours=$(grep -i sluice <<<"$new" || true)
[[ -z $ours ]] || die "left after purge: $ours"
[[ -z $new ]] || echo "note: paths that appeared meanwhile (not the package's): $(head -5 <<<"$new")"
echo OK
