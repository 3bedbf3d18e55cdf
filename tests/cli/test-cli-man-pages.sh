#!/usr/bin/env bash
# Every image, export and simulator command has a man page that renders without troff warnings
# and documents every option its --help lists, so the two cannot drift.
. "$(dirname "$0")/../common/lib.sh"
require man

man_dir=$SRCDIR/docs/man
render() { LC_ALL=C.UTF-8 MANWIDTH=200 man --warnings -l "$1"; }

for page in "$man_dir"/sluice.1 "$man_dir"/sluice-{create,info,check,convert,bench,io,serve,sim}.1; do
  [[ -f $page ]] || die "missing man page $page"
  render "$page" >"$TMP/text" 2>"$TMP/warn" || die "man failed on $page"
  [[ ! -s $TMP/warn ]] || die "troff warnings in $page: $(cat "$TMP/warn")"
  for section in NAME SYNOPSIS DESCRIPTION 'EXIT STATUS' EXAMPLES; do
    grep -q "^$section" "$TMP/text" || die "$page has no $section section"
  done
done

for cmd in create info check convert bench io serve sim; do
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
echo "PASS: $TEST_NAME"
