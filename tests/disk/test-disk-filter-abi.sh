#!/usr/bin/env bash
# Issue 12, item 4: the filter ABI is enforced.  A filter that calls an
# internal libsluice function (here sl_parse_size, declared by hand) fails
# to link with the flags the project builds filters with (-z defs), and a
# copy built without them is refused by `sluice filter install` -- and by
# the loader, if installed behind its back -- with a message naming the
# symbol.  A module without SL_REGISTER_FILTER's ABI stamp is refused.  The
# project's own filters need no libsluice symbol, and the sluice executable
# exports none.  A well-formed filter built the same way installs and
# serves I/O (so the refusals are not the compiler's doing).
. "$(dirname "$0")/../common/lib.sh"
require cc nm
cd "$TMP"
export SLUICE_FILTER_DIR=$TMP/mods
mkdir -m 755 mods
inc=$SRCDIR/include

cat > body.h <<'C'
#include <sluice/filter.h>
static int64_t sz(void *inst, struct sl_next *next) { return sl_next_get_size(next); }
C
cat > good.c <<'C'
#include "body.h"
static const struct sl_filter rec = {
  .api_version = SL_FILTER_API_VERSION, .struct_size = sizeof(struct sl_filter),
  .name = "good", .get_size = sz };
SL_REGISTER_FILTER(rec)
C
cat > bad.c <<'C'
#include "body.h"
int sl_parse_size(const char *what, const char *s, uint64_t *out);
static int cfg(void *inst, const char *k, const char *v)
{ uint64_t n; return sl_parse_size(k, v, &n); }
static const struct sl_filter rec = {
  .api_version = SL_FILTER_API_VERSION, .struct_size = sizeof(struct sl_filter),
  .name = "bad", .get_size = sz, .config = cfg };
SL_REGISTER_FILTER(rec)
C
cat > nostamp.c <<'C'
#include "body.h"
static const struct sl_filter rec = {
  .api_version = SL_FILTER_API_VERSION, .struct_size = sizeof(struct sl_filter),
  .name = "nostamp", .get_size = sz };
__attribute__((visibility("default"))) const struct sl_filter *sluice_filter_init(void);
const struct sl_filter *sluice_filter_init(void) { return &rec; }
C
build() { cc -shared -fPIC -Wall -Werror -I"$inc" -I. -o "$@"; }

# Refused at build: the project's link flags for filters.
build bad.so bad.c -Wl,-z,defs 2>link.err && die "a filter calling sl_parse_size linked with -z defs"
grep -q "undefined reference to .sl_parse_size" link.err || die "unexpected link error: $(cat link.err)"

# Refused at install and at load when built without them.
build bad.so bad.c
build good.so good.c -Wl,-z,defs
build nostamp.so nostamp.c -Wl,-z,defs
expect_fail "filter bad: refused: it calls sl_parse_size, which is not part of the filter ABI" \
  sluice filter install bad.so
[[ ! -e mods/bad.so ]] || die "the refused module was installed"
expect_fail "filter nostamp: no ABI stamp" sluice filter install nostamp.so
sluice filter install good.so >/dev/null || die "a well-formed filter does not install"
sluice create -q -f raw img.raw 1M
printf 'sluice-disk 1\nimage img.raw\nfilter good\n' > d.disk
sluice io d.disk write -s "through good" 0 >/dev/null
assert_eq "$(sluice io d.disk cat 0 12)" "through good" "I/O through a well-formed filter"

# Smuggled in behind install's back: the loader refuses it just the same.
cp bad.so mods/good.so
python3 - mods <<'PY'
import hashlib, os, sys
d = sys.argv[1]
p = os.path.join(d, "good.so")
st = os.stat(p)
h = hashlib.sha256(open(p, "rb").read()).hexdigest()
lines = [l for l in open(os.path.join(d, "MANIFEST")) if not l.startswith("good ")]
old = [l for l in open(os.path.join(d, "MANIFEST")) if l.startswith("good ")][0].split()
old[1] = h
old[2] = str(st.st_size)
if len(old) > 6:
    old[6] = str(st.st_ino)
open(os.path.join(d, "MANIFEST"), "w").write("".join(lines) + " ".join(old) + "\n")
PY
expect_fail "filter good: refused: it calls sl_parse_size" sluice io d.disk cat 0 12

# The tree's own filters need no libsluice symbol; the executable exports none.
undef=$(nm -D --undefined-only "$BUILDDIR"/filters/*.so | awk '$2 ~ /^sl_/ {print $2}' | sort -u)
[[ -z $undef ]] || die "filters need libsluice symbols: $undef"
exported=$(nm -D --defined-only "$SLUICE" | awk '$3 ~ /^sl_/ {print $3}' | head -5)
[[ -z $exported ]] || die "the sluice executable exports libsluice symbols: $exported"
echo OK
