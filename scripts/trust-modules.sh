#!/bin/sh
# The last step of `meson install` (filters/meson.build): make each shipped
# filter module trusted, the only way a module ever becomes trusted -- by
# running the installed `sluice filter install` on it, which copies it into
# the filter directory and records it in that directory's MANIFEST.
#
#   trust-modules.sh MODULE_DIR FILTER_DIR SLUICE NAME...
#
# MODULE_DIR, FILTER_DIR and SLUICE are the final (absolute) paths.  With
# DESTDIR, meson installs under it; so do we: every path, the filter
# directory included (even when it is outside the prefix, as
# /var/lib/sluice/filters), is taken inside DESTDIR, so a staged install
# writes nothing outside its root.  meson tells us DESTDIR as the
# difference between MESON_INSTALL_DESTDIR_PREFIX (DESTDIR + prefix, made
# absolute) and MESON_INSTALL_PREFIX.
set -eu
moddir=$1 filterdir=$2 sluice=$3
shift 3
: "${MESON_INSTALL_PREFIX:?run by meson install}"
: "${MESON_INSTALL_DESTDIR_PREFIX:?run by meson install}"
destdir=${MESON_INSTALL_DESTDIR_PREFIX%"$MESON_INSTALL_PREFIX"}
if [ "$destdir$MESON_INSTALL_PREFIX" != "$MESON_INSTALL_DESTDIR_PREFIX" ]; then
  echo "trust-modules: cannot tell DESTDIR from '$MESON_INSTALL_DESTDIR_PREFIX'" \
       "and prefix '$MESON_INSTALL_PREFIX'" >&2
  exit 1
fi
if [ -n "${MESON_INSTALL_DRY_RUN:-}" ]; then
  echo "would trust $* from $destdir$moddir in $destdir$filterdir"
  exit 0
fi

# The loader refuses a directory others may write, so make ours 0755 (only
# the leaf: parents are what they are, and the loader checks only this).
if [ ! -d "$destdir$filterdir" ]; then
  mkdir -p "$destdir$filterdir"
  chmod 0755 "$destdir$filterdir"
fi
for name in "$@"; do
  SLUICE_FILTER_DIR="$destdir$filterdir" \
    "$destdir$sluice" filter install "$destdir$moddir/$name.so" >/dev/null ||
    { echo "trust-modules: 'sluice filter install' of $name failed" >&2; exit 1; }
done
echo "Trusted $# filter modules in $destdir$filterdir"
