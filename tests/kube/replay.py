"""Replays a recorded transcript (shared/reference/kube-api) against the fake and compares status
codes, body shapes and resourceVersion/generation behaviour. Recorded resourceVersions are mapped
onto the fake's as responses arrive; watches that start from a version are replayed after the
file's other steps (the history makes that equivalent to having been open during them).
"""

from __future__ import annotations

import bisect
import http.client
import json
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
_DIGITS = re.compile(r"\d+")
_VOLATILE_META = ("uid", "creationTimestamp", "resourceVersion", "managedFields", "deletionTimestamp")


def norm_message(text: str) -> str:
    return _DIGITS.sub("N", re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "UID", text))


@dataclass
class Replayer:
    port: int
    rv_map: dict[int, int] = field(default_factory=dict)  # recorded -> fake
    last: dict[str, tuple[int, int]] = field(default_factory=dict)  # object -> (recorded rv, fake rv)
    failures: list[str] = field(default_factory=list)

    # --- HTTP -----------------------------------------------------------------------------
    def send(self, request: Obj, *, watch_timeout: float | None = None) -> tuple[int, Any]:
        query = dict(request.get("query") or {})
        if watch_timeout is not None:
            query["timeoutSeconds"] = str(watch_timeout)
        if "resourceVersion" in query and query["resourceVersion"] not in ("", "0"):
            query["resourceVersion"] = str(self.fake_rv(int(query["resourceVersion"])))
        path = request["path"] + ("?" + urllib.parse.urlencode(query) if query else "")
        body = request.get("body")
        if isinstance(body, dict) and (body.get("metadata") or {}).get("resourceVersion"):
            body = {
                **body,
                "metadata": {
                    **body["metadata"],
                    "resourceVersion": str(self.fake_rv(int(body["metadata"]["resourceVersion"]))),
                },
            }
        raw = None if body is None else (body if isinstance(body, str) else json.dumps(body)).encode()
        headers = {"Accept": "application/json"}
        if request.get("headers", {}).get("content-type"):
            headers["Content-Type"] = request["headers"]["content-type"]
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(request["method"], path, body=raw, headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode()
        finally:
            conn.close()
        if watch_timeout is not None:
            return resp.status, [json.loads(line) for line in text.splitlines() if line.strip()]
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text

    def fake_rv(self, recorded: int) -> int:
        keys = sorted(self.rv_map)
        i = bisect.bisect_right(keys, recorded) - 1
        return self.rv_map[keys[i]] if i >= 0 else recorded

    # --- comparison -------------------------------------------------------------------------
    def fail(self, where: str, what: str) -> None:
        self.failures.append(f"{where}: {what}")

    def compare(self, where: str, expected: Any, actual: Any) -> None:
        if isinstance(expected, str) or isinstance(actual, str):
            if expected != actual:
                self.fail(where, f"body {actual!r} != {expected!r}")
            return
        if not isinstance(expected, dict) or not isinstance(actual, dict):
            if expected != actual:
                self.fail(where, f"body {actual!r} != {expected!r}")
            return
        if expected.get("kind") == "Status":
            self.compare_status(where, expected, actual)
        elif "items" in expected:
            self.compare_list(where, expected, actual)
        else:
            self.compare_object(where, expected, actual)

    def compare_status(self, where: str, expected: Obj, actual: Obj) -> None:
        for key in ("kind", "apiVersion", "status", "reason", "code"):
            if expected.get(key) != actual.get(key):
                self.fail(where, f"Status.{key} {actual.get(key)!r} != {expected.get(key)!r}")
        if str(expected.get("message", "")).startswith("error decoding patch:"):
            if not str(actual.get("message", "")).startswith("error decoding patch:"):
                self.fail(where, f"message {actual.get('message')!r}")
        elif expected.get("message") and norm_message(expected["message"]) != norm_message(actual.get("message", "")):
            self.fail(where, f"message {actual.get('message')!r} != {expected['message']!r}")
        exp_d, act_d = expected.get("details"), actual.get("details")
        if (exp_d is None) != (act_d is None):
            self.fail(where, f"details {act_d!r} != {exp_d!r}")
        elif exp_d:
            for key in ("name", "group", "kind"):
                if exp_d.get(key) != act_d.get(key):
                    self.fail(where, f"details.{key} {act_d.get(key)!r} != {exp_d.get(key)!r}")
            exp_c = [(c["reason"], c["field"]) for c in exp_d.get("causes", [])]
            act_c = [(c["reason"], c["field"]) for c in act_d.get("causes", [])]
            if exp_c != act_c:
                self.fail(where, f"causes {act_c} != {exp_c}")

    def compare_list(self, where: str, expected: Obj, actual: Obj) -> None:
        for key in ("kind", "apiVersion"):
            if expected.get(key) != actual.get(key):
                self.fail(where, f"list {key} {actual.get(key)!r} != {expected.get(key)!r}")
        if set(expected["metadata"]) != set(actual.get("metadata", {})):
            self.fail(
                where, f"list metadata keys {sorted(actual.get('metadata', {}))} != {sorted(expected['metadata'])}"
            )
        if expected["metadata"].get("remainingItemCount") != actual.get("metadata", {}).get("remainingItemCount"):
            self.fail(where, "remainingItemCount differs")
        names = [i["metadata"]["name"] for i in expected["items"]]
        got = [i["metadata"]["name"] for i in actual.get("items", [])]
        if sorted(names) != sorted(got):
            self.fail(where, f"items {got} != {names}")
            return
        by_name = {i["metadata"]["name"]: i for i in actual["items"]}
        for item in expected["items"]:
            if expected["kind"] == "PodList":
                self.compare_pod(f"{where} item {item['metadata']['name']}", item, by_name[item["metadata"]["name"]])
                continue
            self.compare_object(
                f"{where} item {item['metadata']['name']}", item, by_name[item["metadata"]["name"]], track=False
            )
        if int(actual["metadata"]["resourceVersion"]) < max(
            [int(i["metadata"]["resourceVersion"]) for i in actual["items"]] or [0]
        ):
            self.fail(where, "list resourceVersion below an item's")

    def compare_object(self, where: str, expected: Obj, actual: Obj, *, track: bool = True) -> None:
        for key in ("kind", "apiVersion"):
            if expected.get(key) != actual.get(key):
                self.fail(where, f"{key} {actual.get(key)!r} != {expected.get(key)!r}")
        em, am = expected.get("metadata", {}), actual.get("metadata", {})
        ignore = set(_VOLATILE_META) | {"name"} if em.get("generateName") else set(_VOLATILE_META)
        for key in set(em) | set(am):
            if key in ignore:
                continue
            if em.get(key) != am.get(key):
                self.fail(where, f"metadata.{key} {am.get(key)!r} != {em.get(key)!r}")
        for key in ("resourceVersion", "deletionTimestamp", "uid", "creationTimestamp"):
            if (key in em) != (key in am):
                self.fail(where, f"metadata.{key} present={key in am}, expected {key in em}")
        if expected.get("kind") == "Pod":
            self.compare_pod(where, expected, actual)
        else:
            for key in set(expected) - {"metadata"}:
                if key in ("eventTime", "deprecatedSource", "deprecatedFirstTimestamp", "deprecatedLastTimestamp"):
                    if (expected[key] is None) != (actual.get(key) is None) and key != "deprecatedSource":
                        self.fail(where, f"{key} {actual.get(key)!r} != {expected[key]!r}")
                    continue
                if expected[key] != actual.get(key):
                    self.fail(where, f"{key} {actual.get(key)!r} != {expected[key]!r}")
        if track and "resourceVersion" in em:
            self.track(where, expected, actual)

    def compare_pod(self, where: str, expected: Obj, actual: Obj) -> None:
        es, as_ = expected.get("status", {}), actual.get("status", {})
        for key in ("phase", "podIP", "podIPs", "hostIP", "hostIPs"):
            if es.get(key) != as_.get(key):
                self.fail(where, f"status.{key} {as_.get(key)!r} != {es.get(key)!r}")
        ids = [c.get("containerID") for c in es.get("containerStatuses", [])]
        if ids != [c.get("containerID") for c in as_.get("containerStatuses", [])]:
            self.fail(where, "containerStatuses differ")
        for key in ("nodeName", "restartPolicy", "schedulerName", "serviceAccountName"):
            if expected.get("spec", {}).get(key) != actual.get("spec", {}).get(key):
                self.fail(where, f"spec.{key} differs")

    def track(self, where: str, expected: Obj, actual: Obj) -> None:
        """Same recorded version <=> same fake version; a newer one <=> a newer one."""
        em, am = expected["metadata"], actual["metadata"]
        rec, fake = int(em["resourceVersion"]), int(am["resourceVersion"])
        ident = f"{expected.get('kind')}/{em.get('namespace', '')}/{em.get('name')}"
        if ident in self.last:
            prev_rec, prev_fake = self.last[ident]
            if (rec == prev_rec) != (fake == prev_fake) or (rec > prev_rec) != (fake > prev_fake):
                self.fail(where, f"resourceVersion behaviour: recorded {prev_rec}->{rec}, fake {prev_fake}->{fake}")
        self.last[ident] = (rec, fake)
        self.rv_map.setdefault(rec, fake)

    def compare_stream(self, where: str, expected: list[Obj], actual: list[Obj], *, ordered: bool = True) -> None:
        def key(e: Obj) -> tuple[str, str, int | None]:
            obj = e["object"]
            if e["type"] == "ERROR":
                return "ERROR", obj.get("reason", ""), obj.get("code")
            return e["type"], obj["metadata"].get("name", ""), obj["metadata"].get("generation")

        exp = [key(e) for e in expected if e["type"] != "BOOKMARK"]
        got = [key(e) for e in actual if e["type"] != "BOOKMARK"]
        if exp != got:
            self.fail(where, f"events {got} != {exp}")
        last_rv = 0
        for e in actual:
            rv = int(e["object"].get("metadata", {}).get("resourceVersion") or 0)
            if e["type"] == "BOOKMARK":
                if set(e["object"]) != {"apiVersion", "kind", "metadata"} or rv < last_rv:
                    self.fail(where, f"bad bookmark {e}")
            elif ordered and rv and rv <= last_rv:
                self.fail(where, "events out of resourceVersion order")
            last_rv = max(last_rv, rv)
        if any(e["type"] == "BOOKMARK" for e in expected) and not any(e["type"] == "BOOKMARK" for e in actual):
            self.fail(where, "no BOOKMARK although allowWatchBookmarks=true")
        for e, a in zip(expected, actual, strict=False):
            if e["type"] in ("ADDED", "MODIFIED", "DELETED") and e["type"] == a["type"]:
                self.compare_object(where, e["object"], a["object"], track=False)
                self.rv_map.setdefault(
                    int(e["object"]["metadata"]["resourceVersion"]), int(a["object"]["metadata"]["resourceVersion"])
                )
