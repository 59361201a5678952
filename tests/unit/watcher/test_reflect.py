"""Reflector (relist and watch bookkeeping) and ScopedCore (namespace scope and inject filter)."""

from __future__ import annotations

from typing import Any

from chaosbus.common import messages as m
from chaosbus.watcher.core import WatcherCore
from chaosbus.watcher.reflect import Change, Reflector, Scope, ScopedCore


def obj(kind: str, name: str, rv: int, ns: str = "default", **meta: Any) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": ns, "resourceVersion": str(rv), "uid": name, **meta}}


def test_relist_yields_only_what_changed() -> None:
    r = Reflector("PodChaos")
    first = r.on_list([obj("PodChaos", "a", 5), obj("PodChaos", "b", 6)], 6)
    assert [(c.key, c.revision) for c in first] == [("PodChaos.default.a", 5), ("PodChaos.default.b", 6)]
    again = r.on_list([obj("PodChaos", "a", 5), obj("PodChaos", "c", 9)], 10)
    assert [(c.key, c.obj is None, c.revision) for c in again] == [
        ("PodChaos.default.c", False, 9),
        ("PodChaos.default.b", True, 10),
    ]


def test_core_list_items_get_their_kind() -> None:
    [change] = Reflector("Pod").on_list([{"metadata": {"name": "p", "namespace": "x", "resourceVersion": "3"}}], 3)
    assert change.key == "Pod.x.p" and change.obj is not None and change.obj["kind"] == "Pod"


def test_watch_events_already_seen_are_dropped() -> None:
    r = Reflector("PodChaos")
    r.on_list([obj("PodChaos", "a", 5)], 5)
    assert r.on_event("MODIFIED", obj("PodChaos", "a", 5)) is None
    assert r.on_event("MODIFIED", obj("PodChaos", "a", 7)) is not None
    assert r.on_event("DELETED", obj("PodChaos", "a", 8)) == Change("PodChaos.default.a", None, 8)
    assert r.on_event("DELETED", obj("PodChaos", "a", 8)) is None


def ns(name: str, rv: int, enabled: bool) -> Change:
    annotations = {"chaos-mesh.org/inject": "enabled"} if enabled else {}
    return Change(
        f"Namespace._.{name}",
        {"kind": "Namespace", "metadata": {"name": name, "annotations": annotations, "resourceVersion": str(rv)}},
        rv,
    )


def pod(name: str, namespace: str, rv: int) -> Change:
    return Change(f"Pod.{namespace}.{name}", obj("Pod", name, rv, namespace), rv)


def test_inject_filter_projects_pods_only_of_enabled_namespaces() -> None:
    core = ScopedCore(WatcherCore(), Scope(enable_filter_namespace=True))
    core.apply(ns("prod", 1, enabled=False))
    assert core.apply(pod("web", "prod", 2)).target_puts == []
    turned_on = core.apply(ns("prod", 3, enabled=True))
    assert [k for k, _ in turned_on.target_puts] == ["namespace.prod", "pod.prod.web"]
    turned_off = core.apply(ns("prod", 4, enabled=False))
    assert turned_off.target_deletes == ["pod.prod.web"]


def test_namespace_scoped_mode_ignores_other_namespaces() -> None:
    core = ScopedCore(WatcherCore(), Scope(cluster_scoped=False, target_namespace="team"))
    assert core.apply(pod("a", "other", 1)).target_puts == []
    [(key, target)] = core.apply(pod("b", "team", 2)).target_puts
    assert key == "pod.team.b" and isinstance(target, m.TargetPod)


def test_without_filter_everything_is_projected_as_in_local_mode() -> None:
    core = ScopedCore(WatcherCore(), Scope())
    assert [k for k, _ in core.apply(pod("web", "prod", 2)).target_puts] == ["pod.prod.web"]
    assert core.apply(ns("prod", 3, enabled=False)).target_deletes == []
