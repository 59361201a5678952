"""The injector's ctypes and netlink glue, private to `backends`: libnftables through ctypes
(`libnft`), raw nfnetlink and ctnetlink messages (`nfnl`, `ctnetlink`), tc over rtnetlink
(`tcwire`, the netlink thread per namespace in `netnslink`, the classic-BPF classifier `cbpf`)
and the native helpers' paths and nsexec (`native`).

Only the backend modules beside this package import it; everything above them (faults, the
executor, the sweeper, the edge) reaches the kernel through those modules, which are its facade
(import-linter contract `injector-glue`). Nothing here is stable API.
"""
