#!/usr/bin/env bash
# Installs what the kernel lane (`make test-kernel`) needs on top of scripts/install-system-deps.sh:
# QEMU (software emulation, no KVM needed), Debian's stock kernel (it ships sch_netem as a module)
# and a static busybox for the VM's tiny initramfs. About 900 MB, so only this lane pays for it.
set -euo pipefail
missing=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
ls /boot/vmlinuz-*-amd64 >/dev/null 2>&1 || missing+=(linux-image-amd64)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || missing+=(busybox-static)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "chaosbus: the kernel lane needs: ${missing[*]} (install them as root)" >&2
  exit 1
fi
echo "chaosbus: installing ${missing[*]} for the kernel lane"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
