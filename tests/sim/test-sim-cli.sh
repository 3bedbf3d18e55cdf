#!/usr/bin/env bash
# sluice sim's interface: --output=json is valid JSON of the documented
# shape, md and csv tables, --trace - reads standard input (compressed or
# not), --plot writes a PNG, and bad input or options fail with a message
# naming the file, the line or record, and the problem.  (Truncated binary
# traces, cut from the shipped ones, are test-sim-cli-traces.)
source "$SRCDIR/tests/common/lib.sh"
require python3 gzip xz zstd bzip2

# A trace where LRU and FIFO differ: 1 2 3 1 4 1 with 3 of 4 blocks cached.
printf '1\n2\n3\n1\n*\n4\n1\n' > "$TMP/t.txt"
sluice sim --trace "$TMP/t.txt" --format txt --policy fifo,lru,belady \
  --sizes 0.5,0.75 --output=json > "$TMP/out.json"
python3 - "$TMP/out.json" <<'PY' || die "bad JSON output: $(cat "$TMP/out.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert set(d) == {"trace", "requests", "footprint", "results"}, d.keys()
assert d["requests"] == 6 and d["footprint"] == 4, d
r = {(x["policy"], x["size_fraction"]): x for x in d["results"]}
assert len(r) == 6
for x in d["results"]:
    assert set(x) == {"policy", "size_fraction", "cache_blocks", "miss_ratio"}
assert r[("lru", 0.75)]["cache_blocks"] == 3
assert r[("lru", 0.5)]["cache_blocks"] == 2
# 3 blocks: LRU keeps 1 (hits twice), FIFO evicts it for 4 (hits once).
assert abs(r[("lru", 0.75)]["miss_ratio"] - 4 / 6) < 1e-6, r
assert abs(r[("fifo", 0.75)]["miss_ratio"] - 5 / 6) < 1e-6, r
assert r[("belady", 0.75)]["miss_ratio"] <= r[("lru", 0.75)]["miss_ratio"]
PY

# Standard input, plain and compressed, gives the same answer.
want=$(sluice sim --trace "$TMP/t.txt" --format txt --policy lru --sizes 0.75 --output=csv)
for z in cat gzip xz zstd bzip2; do
  got=$($z < "$TMP/t.txt" | sluice sim --trace - --format txt --policy lru \
        --sizes 0.75 --output=csv)
  assert_eq "$got" "$want" "--trace - through $z"
done
grep -q '^lru,0.75,3,0.66666667$' <<<"$want" || die "csv: $want"

sluice sim --trace "$TMP/t.txt" --format txt --policy lru,fifo --sizes 0.5 \
  --output=md > "$TMP/out.md"
grep -q '^| lru | 0.8333 |$' "$TMP/out.md" || die "md table: $(cat "$TMP/out.md")"

if command -v gnuplot >/dev/null; then
  sluice sim --trace "$TMP/t.txt" --format txt --policy lru,fifo \
    --sizes 0.25,0.5,0.75 --plot "$TMP/curve.png" > /dev/null
  [[ $(head -c 4 "$TMP/curve.png" | od -An -c | tr -d ' ') == '211PNG' ]] ||
    die "--plot did not write a PNG"
fi

# Errors name the problem.
expect_fail 'unknown policy "nope" \(valid: fifo lru' \
  sluice sim --trace "$TMP/t.txt" --format txt --policy lru,nope
expect_fail 'unknown format "bogus" \(valid: vscsi oracle lis txt' \
  sluice sim --trace "$TMP/t.txt" --format bogus --policy lru
expect_fail 'not a fraction' \
  sluice sim --trace "$TMP/t.txt" --format txt --policy lru --sizes 0,2
expect_fail 'unknown --output' \
  sluice sim --trace "$TMP/t.txt" --format txt --policy lru --output=xml
expect_fail "$TMP/missing: No such file" \
  sluice sim --trace "$TMP/missing" --format txt --policy lru
printf '1\n2\nthree\n' > "$TMP/bad.txt"
expect_fail "bad.txt: line 3: expected one block number" \
  sluice sim --trace "$TMP/bad.txt" --format txt --policy lru
printf '1 2 0 1\nx y\n' > "$TMP/bad.lis"
expect_fail "bad.lis: line 2: expected" \
  sluice sim --trace "$TMP/bad.lis" --format lis --policy lru
expect_fail "not a VSCSI trace" \
  sluice sim --trace "$TMP/t.txt" --format vscsi --policy lru
gzip -c "$TMP/t.txt" | head -c 20 > "$TMP/cut.gz"
expect_fail "cut.gz: truncated gzip data" \
  sluice sim --trace "$TMP/cut.gz" --format txt --policy lru
expect_fail "no requests" \
  sluice sim --trace /dev/null --format txt --policy lru
echo OK
