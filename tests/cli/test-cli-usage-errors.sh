#!/usr/bin/env bash
# Wrong options, bad sizes and missing files give a clear message naming the
# thing and the problem, and exit 1 (never a signal).
. "$(dirname "$0")/../common/lib.sh"
cd "$TMP"

expect_fail "unknown command 'frobnicate'" sluice frobnicate
expect_fail "no FILE given" sluice create
expect_fail "a SIZE is needed" sluice create x.qcow2
expect_fail "size: '12Q' has an unknown suffix" sluice create x.qcow2 12Q
expect_fail "cluster_size 1000 must be a power of two" sluice create -o cluster_size=1000 x.qcow2 1M
expect_fail "cluster_size .* must be a power of two" sluice create -o cluster_size=4M x.qcow2 1M
expect_fail "unknown option 'bogus'" sluice create -o bogus=1 x.qcow2 1M
expect_fail "unknown image format 'vmdk'" sluice create -f vmdk x.img 1M
expect_fail "missing.qcow2: cannot open: No such file" sluice info missing.qcow2
expect_fail "missing.qcow2: cannot open" sluice convert missing.qcow2 out.raw
expect_fail "--output: 'xml' is not human or json" sluice info --output=xml x
expect_fail "-r: 'some' is not leaks or all" sluice check -r some x
mkdir adir
expect_fail "adir: is a directory" sluice info adir

sluice create -q -f raw r.raw 1M
expect_fail "beyond the end" sluice io r.raw read 1M 1
expect_fail "unknown operation 'poke'" sluice io r.raw poke 0 1
expect_fail "pattern verification failed at offset 0" sluice io r.raw read -P 0x11 0 512
expect_fail "exceed the image size" sluice bench -s 2M r.raw
expect_fail "flush-interval is only allowed with -w" sluice bench --flush-interval 4 r.raw
sluice create -q base.qcow2 1M
sluice create -q -b base.qcow2 top.qcow2
expect_fail "--poll-us: 'x' is not a number" sluice serve --poll-us x --nbd unix:s.sock r.raw
expect_fail "--poll-us: 2000000 is out of range" sluice serve --poll-us 2000000 --nbd unix:s.sock r.raw
expect_fail "--workers: 0 is out of range" sluice serve --workers 0 --nbd unix:s.sock r.raw
rm base.qcow2
expect_fail "top.qcow2: backing file 'base.qcow2'.*No such file" sluice io top.qcow2 read 0 1
echo ok
