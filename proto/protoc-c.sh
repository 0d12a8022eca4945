#!/bin/sh
# Runs protoc's C generator, then renames a message field called `base` to `base_` in the
# generated C. protobuf-c puts `ProtobufCMessage base;` first in every message struct, so a
# proto field named `base` (Image.base in SPEC §2, a binding name) would be a duplicate member.
# Only the C spelling changes: the wire format and other languages still see `base`.
# Usage: protoc-c.sh OUT_DIR PROTOC ARGS... where OUT_DIR is protoc's --c_out directory and
# the .proto files among ARGS are named by their import path.
set -eu
out=$1
shift
"$@"
for arg in "$@"; do
  case "$arg" in *.proto) ;; *) continue ;; esac
  h="$out/${arg%.proto}.pb-c.h"
  grep -v 'ProtobufC[A-Za-z]* base;' "$h" | grep -q '^  [A-Za-z_].*[ *]base;$' || continue
  sed -i '/ProtobufC[A-Za-z]* base;/!s/^\(  [A-Za-z_].*[ *]\)base;$/\1base_;/' "$h"
  sed -i 's/offsetof(\([A-Za-z0-9_]*\), base)/offsetof(\1, base_)/g' "$out/${arg%.proto}.pb-c.c"
done
