#!/usr/bin/env bash
# Installs the Debian packages the node suite (tests/node) runs: containerd with its CRI plugin,
# runc, the CNI bridge/host-local plugins, iptables and conntrack for kube-proxy, a static
# busybox for the test images and gcc for the pause binary. Only what is missing is installed;
# the packages' own services are not started (the tests start containerd themselves, inside
# the node's namespaces). Needs root; without it, prints what is missing and exits 3.
set -euo pipefail

packages=(containerd runc containernetworking-plugins iptables conntrack busybox-static gcc libc6-dev)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "node-deps: missing ${missing[*]}; run as root to install them" >&2
  exit 3
fi
echo "node-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d keeps dpkg from starting containerd's service on machines that have an init.
policy=/usr/sbin/policy-rc.d
installed_policy=false
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; installed_policy=true
fi
trap '$installed_policy && rm -f "$policy"' EXIT
if ! apt-get install -y --no-install-recommends "${missing[@]}" >&2; then
  apt-get update >&2
  apt-get install -y --no-install-recommends "${missing[@]}" >&2
fi
