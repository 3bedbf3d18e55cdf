# Sourced by the install tests after common/lib.sh: the installation
# directories of the build under test (its meson options, as absolute
# paths), and stage_install ROOT, which runs `meson install --destdir ROOT`
# on it (no rebuild: the test runs against what was built).
require meson python3
meson introspect "$BUILDDIR" --buildoptions > "$TMP/opts.json"
opt() { python3 -c "
import json, sys
v = next(o['value'] for o in json.load(open(sys.argv[2])) if o['name'] == sys.argv[1])
print(str(v).lower() if isinstance(v, bool) else v)" "$1" "$TMP/opts.json"; }
prefix=$(opt prefix)
abs() { [[ $1 == /* ]] && echo "$1" || echo "$prefix/$1"; }
bindir=$(abs "$(opt bindir)"); sbindir=$(abs "$(opt sbindir)")
libdir=$(abs "$(opt libdir)"); mandir=$(abs "$(opt mandir)")
includedir=$(abs "$(opt includedir)"); datadir=$(abs "$(opt datadir)")
filter_dir=$(opt filter_dir); filter_dir=$(abs "${filter_dir:-$(opt libdir)/sluice/filters}")
trust=$(opt trust_modules)
moddir=$libdir/sluice/modules

stage_install() {
  meson install -C "$BUILDDIR" --no-rebuild --destdir "$1" > "$TMP/install.log" 2>&1 ||
    die "meson install failed: $(tail -20 "$TMP/install.log")"
}
