#!/usr/bin/env bash
# Every image, export and simulator command has a man page that renders without troff warnings
# and documents every option its --help lists, so the two cannot drift.  The
# disk, filter and mirror commands and every filter module have pages too.
. "$(dirname "$0")/../common/lib.sh"
require man

man_dir=$SRCDIR/docs/man
render() { LC_ALL=C.UTF-8 MANWIDTH=200 man --warnings -l "$1"; }

for page in "$man_dir"/sluice.1 "$man_dir"/sluice-{create,info,check,convert,bench,io,serve,sim,demo,owner,release}.1; do
  [[ -f $page ]] || die "missing man page $page"
  render "$page" >"$TMP/text" 2>"$TMP/warn" || die "man failed on $page"
  [[ ! -s $TMP/warn ]] || die "troff warnings in $page: $(cat "$TMP/warn")"
  for section in NAME SYNOPSIS DESCRIPTION 'EXIT STATUS' EXAMPLES; do
    grep -q "^$section" "$TMP/text" || die "$page has no $section section"
  done
done

for cmd in create info check convert bench io serve sim demo owner release; do
  render "$man_dir/sluice-$cmd.1" 2>/dev/null | tr -d '\255' >"$TMP/text"
  # Options as --help spells them: -x and --long-name (without =VALUE).
  options=$(sluice "$cmd" --help | grep -oE '(^|[ [])--?[A-Za-z][-A-Za-z]*' |
            sed 's/^[ [\]*//' | sort -u)
  [[ -n $options ]] || die "sluice $cmd --help lists no options"
  for opt in $options; do
    grep -qE -- "(^|[^-A-Za-z])$opt([^-A-Za-z]|$)" "$TMP/text" ||
      die "sluice-$cmd.1 does not document $opt (listed by sluice $cmd --help)"
  done
  # The page names the command in its synopsis.
  grep -q "sluice $cmd" "$TMP/text" || die "sluice-$cmd.1 has no synopsis for sluice $cmd"
done

# And every subcommand in the top-level help appears in sluice(1).
render "$man_dir/sluice.1" 2>/dev/null >"$TMP/text"
for cmd in $(sluice --help | sed -n 's/^  \([a-z]\+\) .*/\1/p'); do
  grep -qw "$cmd" "$TMP/text" || die "sluice.1 does not mention the $cmd command"
done
# The disk, filter and mirror commands (helper filterdocs): each page renders
# cleanly, has the usual sections and names every subcommand --help lists.
for cmd in disk filter mirror; do
  page=$man_dir/sluice-$cmd.1
  [[ -f $page ]] || die "missing man page $page"
  render "$page" 2>"$TMP/warn" | tr -d '\255' >"$TMP/text" || die "man failed on $page"
  [[ ! -s $TMP/warn ]] || die "troff warnings in $page: $(cat "$TMP/warn")"
  for section in NAME SYNOPSIS DESCRIPTION 'EXIT STATUS' EXAMPLES; do
    grep -q "^$section" "$TMP/text" || die "$page has no $section section"
  done
  subs=$(sluice "$cmd" --help | sed -nE "s/^(Usage:)? *sluice $cmd ([a-z]+).*/\2/p" | sort -u)
  [[ -n $subs ]] || die "sluice $cmd --help lists no subcommands"
  for sub in $subs; do
    grep -q "sluice $cmd $sub" "$TMP/text" || die "sluice-$cmd.1 has no synopsis for sluice $cmd $sub"
  done
done
render "$man_dir/sluice-filter.1" 2>/dev/null >"$TMP/filter-page"
grep -q SLUICE_FILTER_DIR "$TMP/filter-page" ||
  die "sluice-filter.1 does not document SLUICE_FILTER_DIR"

# One page per filter module, beside its source and installed, documenting
# every parameter the filter's config() accepts (as NAME=).
for dir in "$SRCDIR"/filters/*/; do
  name=$(basename "$dir")
  page=$dir/sluice-filter-$name.1
  [[ -f $page ]] || die "filter $name has no man page $page"
  render "$page" 2>"$TMP/warn" | tr -d '\255' >"$TMP/text" || die "man failed on $page"
  [[ ! -s $TMP/warn ]] || die "troff warnings in $page: $(cat "$TMP/warn")"
  for section in NAME SYNOPSIS DESCRIPTION PARAMETERS CLASS EXAMPLES; do
    grep -q "^$section" "$TMP/text" || die "$page has no $section section"
  done
  params=$(grep -ohE 'strcmp\((key|k), "[a-z][-a-z_]*"\)' "$dir"/*.c |
           sed -E 's/.*"([^"]+)".*/\1/' | sort -u || true)
  for p in $params name; do
    grep -qE "(^|[^-a-z_])$p=" "$TMP/text" ||
      die "sluice-filter-$name.1 does not document $p= (accepted by filters/$name)"
  done
  grep -q "filters/$name/sluice-filter-$name.1" "$SRCDIR/docs/meson.build" ||
    die "sluice-filter-$name.1 is not installed by docs/meson.build"
  grep -q "sluice-filter-$name" "$TMP/filter-page" ||
    die "sluice-filter.1 does not refer to sluice-filter-$name(1)"
done
echo "PASS: $TEST_NAME"
