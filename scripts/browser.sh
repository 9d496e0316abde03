#!/usr/bin/env bash
# The browser tests' browser: Debian's chromium, and fonts-noto-cjk so Chinese renders in screenshots.
# Installed with apt-get when missing; nothing is downloaded at test time.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
fc-list 2>/dev/null | grep -qi "Noto Sans CJK" || missing+=(fonts-noto-cjk)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" fontconfig >/dev/null
fi
chromium --version
