#!/usr/bin/env bash
# Install etcd (the server binary) from Debian's packages when it is missing, and print its version.
# Debian 12 (bookworm) ships etcd 3.4 as `etcd-server`. The package's own service is not needed (the benchmark
# starts its own members on free loopback ports): when this script installs it, it keeps apt from starting it.
#
#   bench/etcd.sh            # install if missing, then print e.g. "etcd 3.4.23 (/usr/bin/etcd)"
set -euo pipefail

find_etcd() {
  if [[ -n "${ETCD_BIN:-}" && -x "${ETCD_BIN}" ]]; then echo "${ETCD_BIN}"; return 0; fi
  command -v etcd 2>/dev/null && return 0
  for p in /usr/bin/etcd /usr/local/bin/etcd; do [[ -x "$p" ]] && { echo "$p"; return 0; }; done
  return 1
}

if ! bin=$(find_etcd); then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: etcd is not installed and this is not a Debian-like system: install etcd 3.4+ and put it on PATH" \
      "(or set ETCD_BIN)" >&2
    exit 1
  fi
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "error: installing etcd-server needs root (or sudo)" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "etcd not found: installing the Debian package etcd-server ..." >&2
  # Keep the package's service from being started by its postinst (only when no policy is in place already).
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee $policy >/dev/null && $sudo chmod +x $policy && made_policy=1
  fi
  cleanup() { if [[ $made_policy -eq 1 ]]; then $sudo rm -f "$policy"; fi; }
  trap cleanup EXIT
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >/dev/null || echo "warning: apt-get update failed; trying the install anyway" >&2
  if ! $sudo apt-get install -y -qq etcd-server >/dev/null; then
    echo "error: apt-get install etcd-server failed (see the output above)" >&2
    exit 1
  fi
  bin=$(find_etcd) || { echo "error: etcd-server was installed but no etcd binary was found" >&2; exit 1; }
fi

version=$("$bin" --version 2>/dev/null | sed -n 's/^etcd Version: *//p' | head -1)
echo "etcd ${version:-unknown} ($bin)"
