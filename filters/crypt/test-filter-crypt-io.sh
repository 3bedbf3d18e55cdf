#!/usr/bin/env bash
# crypt (issue 4, acceptance 4): what is written through the stack reads
# back -- aligned, unaligned inside one sector, across sector boundaries,
# many sectors with partial head and tail, at the very end of the disk, and
# write-zeroes -- checked against a plaintext model file.  The image holds
# AES-256-XTS ciphertext with the sector number as tweak (decrypted here
# independently with AES-ECB from the openssl command line), no
# plaintext, and different ciphertext for equal sectors.  A wrong key reads
# garbage without an error; bad keys and geometries are refused by name.
. "$(dirname "$0")/../../tests/common/lib.sh"
cd "$TMP"
export SLUICE_FILTER_DIR=$TMP/mods
mkdir -m 755 mods
sluice filter install "$BUILDDIR/filters/crypt.so" >/dev/null

size=$((4 << 20))
sluice create -q -f raw img.raw $size
head -c 64 /dev/urandom > key
sluice disk create d.disk img.raw
sluice filter attach d.disk crypt key=key

# Start from encrypted zeros (zeros in the image would decrypt to garbage).
sluice io d.disk zero 0 $size >/dev/null
head -c $size /dev/zero > model
cmp -s <(sluice io d.disk cat 0 $size) model || die "zeroed disk does not read as zeros"
[[ $(tr -d '\0' < img.raw | wc -c) -gt $((size / 2)) ]] || die "write-zeroes left zeros in the image"

# put OFF LEN: write LEN random bytes at OFF through the stack and the model.
n=0
put() {
  n=$((n + 1))
  head -c "$2" /dev/urandom > "chunk$n"
  sluice io d.disk write -i "chunk$n" "$1" >/dev/null
  dd if="chunk$n" of=model bs=64K seek="$1" oflag=seek_bytes conv=notrunc status=none
}
# zap OFF LEN: write-zeroes through the stack and the model.
zap() {
  sluice io d.disk zero "$1" "$2" >/dev/null
  head -c "$2" /dev/zero | dd of=model bs=64K seek="$1" oflag=seek_bytes conv=notrunc status=none
}
# check OFF LEN: an unaligned read through the stack equals the model.
check() {
  cmp -s <(sluice io d.disk cat "$1" "$2") \
         <(dd if=model bs=64K skip="$1" count="$2" iflag=skip_bytes,count_bytes status=none) ||
    die "read of $2 bytes at $1 differs from what was written"
}

put 1000 100                 # inside one sector
put 500 30                   # across a sector boundary
put 4000 9000                # partial head, whole sectors, partial tail
put 8192 65536               # aligned, many sectors
put 511 2                    # one byte each side of a boundary
put 0 1                      # first byte
put $((size - 7)) 7          # last bytes of the disk
put $((1 << 20 | 1)) $(((1 << 20) - 2))   # a large unaligned write
zap 3000 5000                # unaligned write-zeroes
zap $((2 << 20)) $(((1 << 20) + 100))     # more than one zeroing chunk
RANDOM=4242
for i in $(seq 20); do
  off=$(( (RANDOM * 32768 + RANDOM) % (size - 20000) ))
  put $off $((RANDOM % 20000 + 1))
done
for r in "1000 100" "500 30" "3999 9002" "0 3" "$((size - 9)) 9" "511 2" \
         "$((1 << 20)) 4096" "2999 5002" "$(((3 << 20) + 99)) 3"; do
  check $r
done
cmp -s <(sluice io d.disk cat 0 $size) model || die "the disk differs from the model"
# The same through convert, and the image is unchanged by reading.
sum=$(sha256sum < img.raw)
sluice convert d.disk plain.raw
cmp -s plain.raw model || die "convert through crypt differs from the model"
assert_eq "$(sha256sum < img.raw)" "$sum" "image after reads"

# No plaintext in the image, and equal plaintext sectors differ as
# ciphertext (the sector number is the tweak).
head -c 65536 < <(yes "secret plaintext") > text
sluice io d.disk write -i text 1M >/dev/null
cmp -s <(sluice io d.disk cat 1M 64K) text || die "text does not read back"
! grep -q "secret plaintext" img.raw || die "plaintext found in the image"
! grep -q "secret plaintext" <(sluice io --at crypt d.disk cat 1M 64K) || die "plaintext below crypt"
s0=$(dd if=img.raw bs=512 skip=2048 count=1 status=none | sha256sum)
s1=$(dd if=img.raw bs=512 skip=2049 count=1 status=none | sha256sum)
[[ $s0 != "$s1" ]] || die "two equal plaintext sectors have equal ciphertext"

# Known answer: decrypt sectors of the image independently of crypt.c.
# `openssl enc` refuses XTS, so XTS is composed here from its definition
# (IEEE 1619) over AES-256-ECB done by the openssl command line: the tweak
# T0 = AES-enc(K2, sector number as 16 little-endian bytes), T(j+1) =
# T(j) * x in GF(2^128), and P(j) = AES-dec(K1, C(j) ^ T(j)) ^ T(j).
python3 - <<'EOF' || die "the image is not AES-256-XTS with the sector number as tweak"
import subprocess
key = open('key', 'rb').read()
k1, k2 = key[:32].hex(), key[32:].hex()
img = open('img.raw', 'rb').read()
model = open('model', 'rb').read()
text = open('text', 'rb').read()
model = model[:1 << 20] + text + model[(1 << 20) + len(text):]
def ecb(k, data, decrypt):
    return subprocess.run(['openssl', 'enc', '-aes-256-ecb', '-nopad', '-K', k]
                          + (['-d'] if decrypt else []), input=data,
                          capture_output=True, check=True).stdout
def times_x(t):
    n = int.from_bytes(t, 'little') << 1
    if n >> 128:
        n = (n & ((1 << 128) - 1)) ^ 0x87
    return n.to_bytes(16, 'little')
def xor(a, b):
    return bytes(x ^ y for x, y in zip(a, b))
for sector in (0, 1, 2, 7, 2048, 2049, 4000, 8191):
    c = img[sector * 512:(sector + 1) * 512]
    t = ecb(k2, sector.to_bytes(16, 'little'), False)
    ts = []
    for j in range(32):
        ts.append(t)
        t = times_x(t)
    x = ecb(k1, b''.join(xor(c[16 * j:16 * j + 16], ts[j]) for j in range(32)), True)
    plain = b''.join(xor(x[16 * j:16 * j + 16], ts[j]) for j in range(32))
    assert plain == model[sector * 512:(sector + 1) * 512], sector
EOF

# A wrong key reads garbage: no error, no message, nothing like the data.
cp key good.key
head -c 64 /dev/urandom > key
sluice io d.disk cat 0 $size > wrong.bin 2> wrong.err
[[ ! -s wrong.err ]] || die "a wrong key printed: $(cat wrong.err)"
assert_eq "$(stat -c %s wrong.bin)" $size "size read with a wrong key"
python3 - <<'EOF' || die "a wrong key reads (part of) the plaintext"
wrong = open('wrong.bin', 'rb').read()
model = open('model', 'rb').read()
same = sum(wrong[i:i + 512] == model[i:i + 512] for i in range(0, len(model), 512))
assert same == 0, same
EOF
cp good.key key
cmp -s <(sluice io d.disk cat 1M 64K) text || die "the right key no longer decrypts"

# Bad keys and geometries are refused by name; the image is untouched.
sum=$(sha256sum < img.raw)
head -c 63 good.key > key
expect_fail "key file key must hold exactly 64 bytes" sluice io d.disk write -s x 0
{ cat good.key; head -c 1 good.key; } > key
expect_fail "exactly 64 bytes" sluice io d.disk cat 0 1
head -c 32 good.key > key; head -c 32 good.key >> key
expect_fail "the two halves of an XTS key must differ" sluice io d.disk cat 0 1
rm key
expect_fail "key file key: No such file" sluice io d.disk cat 0 1
cp good.key key
assert_eq "$(sha256sum < img.raw)" "$sum" "image after refused opens"
truncate -s 1000 odd.raw
cat > o.disk <<EOF
sluice-disk 1
image odd.raw
filter crypt key=key
EOF
expect_fail "crypt.*image size 1000 is not a multiple of 512" sluice io o.disk cat 0 1
cat > n.disk <<EOF
sluice-disk 1
image img.raw
filter crypt
EOF
expect_fail "filter crypt: key=PATH is required" sluice io n.disk cat 0 1
echo ok
