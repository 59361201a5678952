# One image for every chaosbus service (deploy/k8s runs `python -m chaosbus.<service>` from it).
# nftables, iproute2 and util-linux (nsenter) are what the node injector drives; procps gives `ps`.

# native/ (timeskew for TimeChaos, codepatch for GolangChaos, nsexec for running host tools in a
# target's namespaces, iofs the FUSE filesystem of IOChaos), built
# from source in a stage of its own so the image carries the binaries, not the compiler.
FROM python:3.11-slim AS native
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev make binutils meson ninja-build \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /build
COPY native native
RUN make -C native

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables iproute2 util-linux procps \
 && rm -rf /var/lib/apt/lists/*

# Exactly the files a wheel is built from (tests/contract/test_packaging.py builds from the same set).
WORKDIR /src
COPY pyproject.toml README.md ./
COPY libs libs
COPY services services
COPY cli cli
RUN pip install . \
 && cd / && rm -rf /src \
 && python -c "import chaosbus.watcher.kube, chaosbus.recorder.kube, chaosbus.scheduler.app, chaosbus.injector.app"

COPY --from=native /build/native/build/timeskew /build/native/build/skew_payload.bin /build/native/build/nsexec \
     /build/native/build/iofs /build/native/build/fdswitch /build/native/build/codepatch /opt/chaosbus/native/
ENV CHAOSBUS_NATIVE_DIR=/opt/chaosbus/native

# Non-root by default; only the node injector DaemonSet runs as root (for its capabilities).
RUN groupadd --system --gid 10001 chaosbus \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent chaosbus
USER 10001:10001
WORKDIR /

CMD ["chaosbus", "--help"]
