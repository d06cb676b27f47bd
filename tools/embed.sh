#!/bin/sh
# Writes a C file defining NAME (a NUL-terminated char array) with the bytes of FILE.
# Uses od so that nothing beyond POSIX tools is needed at build time.
set -e
name=$1 file=$2
printf 'const char %s[] = {\n' "$name"
od -An -v -tx1 "$file" | sed 's/ *\([0-9a-f][0-9a-f]\)/0x\1,/g'
printf '0x00};\n'
