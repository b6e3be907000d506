"""A second real client: the official `kubernetes` package lists, watches and resumes after 410 Gone."""

from __future__ import annotations

import pytest

from .conftest import Api

kubernetes = pytest.importorskip("kubernetes")


def _client(api: Api):  # type: ignore[no-untyped-def]
    from kubernetes import client, config

    return client.CoreV1Api(config.new_client_from_config(config_file=str(api.kubeconfig)))


def _svc(name: str):  # type: ignore[no-untyped-def]
    from kubernetes import client

    return client.V1Service(metadata=client.V1ObjectMeta(name=name),
                            spec=client.V1ServiceSpec(selector={"app": name}, ports=[client.V1ServicePort(port=80)]))


def test_list_and_watch(api: Api) -> None:
    from kubernetes import watch

    core = _client(api)
    core.create_namespaced_service("default", _svc("py-a"))
    try:
        listed = core.list_namespaced_service("default")
        assert [s.metadata.name for s in listed.items] == ["py-a"]
        assert listed.items[0].spec.cluster_ip.startswith("10.")
        rv = listed.metadata.resource_version
        core.create_namespaced_service("default", _svc("py-b"))
        w = watch.Watch()
        events = []
        for ev in w.stream(core.list_namespaced_service, "default", resource_version=rv, timeout_seconds=5):
            events.append((ev["type"], ev["object"].metadata.name))
            if len(events) == 1:
                w.stop()
        assert events == [("ADDED", "py-b")]
    finally:
        for n in ("py-a", "py-b"):
            core.delete_namespaced_service(n, "default")


def test_watch_resumes_after_410(api: Api) -> None:
    from kubernetes import watch
    from kubernetes.client.exceptions import ApiException

    from podnet.store import open_store

    core = _client(api)
    old_rv = core.list_namespaced_service("default").metadata.resource_version
    core.create_namespaced_service("default", _svc("py-c"))
    core.delete_namespaced_service("py-c", "default")
    store = open_store(api.store_url)
    try:
        store.compact(store.revision())
    finally:
        store.close()
    w = watch.Watch()
    with pytest.raises(ApiException) as gone:
        for _ in w.stream(core.list_namespaced_service, "default", resource_version=old_rv, timeout_seconds=5):
            pass
    assert gone.value.status == 410
    # the informer's answer to 410: list again, watch from the new version
    fresh = core.list_namespaced_service("default")
    core.create_namespaced_service("default", _svc("py-d"))
    try:
        for ev in w.stream(core.list_namespaced_service, "default",
                           resource_version=fresh.metadata.resource_version, timeout_seconds=5):
            assert (ev["type"], ev["object"].metadata.name) == ("ADDED", "py-d")
            w.stop()
    finally:
        core.delete_namespaced_service("py-d", "default")
