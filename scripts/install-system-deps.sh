#!/usr/bin/env bash
# Installs the Debian packages chaosbus drives (nft, ip, nsenter, ps) and its tests need (etcd,
# containerd, prometheus) when they are missing.
# Only as root and only with apt-get; otherwise it says what is missing and carries on.
set -euo pipefail
missing=()
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
command -v ps >/dev/null 2>&1 || missing+=(procps)
# etcd under the real-API-server test lane (tests/kube with KUBEBUILDER_ASSETS, ../shared/envtest).
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
# A real container runtime for the runtime tests (tests/privileged/test_real_containerd.py runs a
# private containerd of its own; nothing starts the package's daemon without systemd).
command -v containerd >/dev/null 2>&1 || missing+=(containerd)
command -v runc >/dev/null 2>&1 || missing+=(runc)
[ -x /bin/busybox ] || missing+=(busybox-static)
[ -x /usr/lib/cni/ptp ] || missing+=(containernetworking-plugins)
# The real-node tests compile their pause image (a static C program).
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
# native/ (the time-skew and namespace helpers) is built from source: cc, make, ld and objcopy.
{ command -v cc && command -v make && command -v ld && command -v objcopy; } >/dev/null 2>&1 \
  || missing+=(build-essential binutils)
# Prometheus itself, for the test that scrapes a live system with the documented configuration.
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
# StressChaos runs its stressors as stress-ng inside the target's cgroup.
command -v stress-ng >/dev/null 2>&1 || missing+=(stress-ng)
# IOChaos: native/iofs is a FUSE filesystem linked with libfuse 3.17, which native/Makefile builds
# from source with meson and ninja (Debian's libfuse3-dev is 3.14, without the kernel's FUSE
# passthrough); fuse3 gives /etc/fuse.conf, which libfuse falls back on.
command -v meson >/dev/null 2>&1 || missing+=(meson)
command -v ninja >/dev/null 2>&1 || missing+=(ninja-build)
command -v fusermount3 >/dev/null 2>&1 || missing+=(fuse3)
# A real browser for the dashboard's test (tests/e2e/test_dashboard_browser.py, headless through selenium).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
# GolangChaos's tests and `make bench` build their Go target program from source.
command -v go >/dev/null 2>&1 || missing+=(golang-go)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "chaosbus: missing system packages: ${missing[*]} (install them as root)" >&2
  exit 0
fi
echo "chaosbus: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Waits for the dpkg lock instead of failing when another install runs (parallel set-ups on one machine).
apt-get -o DPkg::Lock::Timeout=600 update -qq
apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null
