#!/bin/sh
# Fetch the pinned OHIF viewer into node_modules/@ohif/app (runs as `npm ci`'s postinstall).
#
# Only the package's prebuilt dist/ is needed. `npm install @ohif/app` cannot be used: it also
# installs the package's ~40 build-time dependencies, and pins like @ohif/i18n@3.13.2 and
# @ohif/ui@3.13.2 are not published on the registry, so the install fails with ETARGET.
# `npm pack` fetches just the tarball (through npm's cache); we check it against the SRI
# digest pinned in package.json before unpacking it.
set -eu
cd "$(dirname "$0")"
spec=$(node -p "const o = require('./package.json').ohif; o.package + '@' + o.version")
want=$(node -p "require('./package.json').ohif.integrity")
dest=node_modules/@ohif/app
if [ -f "$dest/.integrity" ] && [ "$(cat "$dest/.integrity")" = "$want" ] && [ -f "$dest/dist/index.html" ]; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
npm pack "$spec" --pack-destination "$tmp" --json --loglevel=error > "$tmp/pack.json"
got=$(node -p "require(process.argv[1])[0].integrity" "$tmp/pack.json")
if [ "$got" != "$want" ]; then
  echo "fetch-ohif: $spec has integrity $got, package.json pins $want; refusing to unpack" >&2
  exit 1
fi
rm -rf "$dest"
mkdir -p "$dest"
tar -xzf "$tmp"/*.tgz -C "$dest" --strip-components=1 --no-same-owner
printf '%s\n' "$want" > "$dest/.integrity"
echo "fetch-ohif: $spec unpacked into viewer/$dest ($(du -sh "$dest/dist" | cut -f1) dist)"
