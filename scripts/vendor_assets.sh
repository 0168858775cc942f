#!/usr/bin/env bash
# Fetch the browser assets the site serves itself (no CDN at view time) from the npm registry.
# Idempotent: does nothing when the pinned file is already in place with the pinned checksum.
set -euo pipefail
MERMAID_VERSION=11.17.2
MERMAID_SHA256=581ed7d74bd9048d0e3a91363927d72ef22942d7722546b27f7cc29e35390eb8
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/docs/assets/vendor/mermaid"
target="$dest/mermaid.min.js"
if [ -f "$target" ] && echo "$MERMAID_SHA256  $target" | sha256sum --check --status; then
  exit 0
fi
command -v npm >/dev/null || { echo "vendor_assets: npm is needed to fetch mermaid@$MERMAID_VERSION" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "mermaid@$MERMAID_VERSION" >/dev/null && tar xzf "mermaid-$MERMAID_VERSION.tgz")
mkdir -p "$dest"
cp "$tmp/package/dist/mermaid.min.js" "$target"
cp "$tmp/package/LICENSE" "$dest/LICENSE"
echo "$MERMAID_SHA256  $target" | sha256sum --check --status || { echo "vendor_assets: checksum mismatch for $target" >&2; exit 1; }
echo "vendor_assets: mermaid $MERMAID_VERSION -> docs/assets/vendor/mermaid/"
