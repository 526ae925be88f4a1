#!/bin/sh
# Extract the King James Bible from Debian's bible-kjv package as plain text for the default model.
#   apt-get install -y bible-kjv
#   sh tools/kjv_corpus.sh [OUT]          (default OUT: /tmp/esolm-kjv/kjv.txt)
# Output: one verse per line, Genesis 1:1 .. Revelation 22:21 in canonical order (31,102 verses),
# the book/chapter/verse reference ("Ge1:1 ") removed, text otherwise as printed (pure ASCII).
# `bible -f` turns pretty-printing off, which prints one verse per line preceded by its reference.
set -eu
OUT=${1:-/tmp/esolm-kjv/kjv.txt}
command -v bible >/dev/null || { echo "bible not found: apt-get install -y bible-kjv" >&2; exit 1; }
mkdir -p "$(dirname "$OUT")"
bible -f Gen1:1-Rev22:21 > "$OUT.raw"
n=$(wc -l < "$OUT.raw")
bad=$(grep -cvE '^[1-3]?[A-Za-z]+[0-9]+:[0-9]+ ' "$OUT.raw" || true)
[ "$bad" = 0 ] || { echo "unexpected line format in $bad lines" >&2; exit 1; }
sed -E 's/^[1-3]?[A-Za-z]+[0-9]+:[0-9]+ //' "$OUT.raw" > "$OUT"
rm -f "$OUT.raw"
echo "$OUT: $n verses, $(wc -c < "$OUT") bytes, sha256 $(sha256sum "$OUT" | cut -d' ' -f1)"
