#!/usr/bin/env bash
# Installs what the browser and JS tests need besides Python packages:
# Debian's chromium (Playwright drives it; browsers cannot be downloaded by
# Playwright here), fonts for the CJK and emoji token text in screenshots,
# and Node.js (JS unit tests). Needs root for apt-get; as a normal user it
# says what to install and the tests that need it skip (except in CI, where
# they fail).
set -euo pipefail

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
for font in fonts-noto-color-emoji fonts-wqy-microhei; do
  dpkg -s "$font" >/dev/null 2>&1 || missing+=("$font")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "note: ${missing[*]} not installed; run: sudo apt-get install ${missing[*]}" >&2
  echo "      (browser/JS tests skip without chromium/node)" >&2
fi
