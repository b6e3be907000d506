"""Service CIDRs: one, or one per IP family (dual-stack), never one holding addresses that cannot be service IPs.
One check (allocators.check_service_cidr) behind every place a CIDR is accepted: the config object, the
--service-cidr option and the PODNET_SERVICE_CIDR environment of `podnet apply`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from podnet.controllers.allocators import AllocatorConfig, check_service_cidr
from podnet.errors import ValidationError

SVC = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n"

REFUSED = [
    ("::/108", "unspecified"), ("::1/128", "too small"), ("::1/126", "loopback"), ("::ffff:0:0/108", "IPv4-mapped"),
    ("fe80::/112", "link-local"), ("ff02::/112", "multicast"), ("fd00::/100", "too large"),
    ("fd00::/127", "too small"), ("0.0.0.0/0", "unspecified"), ("0.0.0.0/8", "unspecified"),
    ("127.0.0.0/16", "loopback"), ("96.0.0.0/3", "loopback"), ("169.254.0.0/24", "link-local"),
    ("224.0.0.0/8", "multicast"), ("192.0.0.0/2", "multicast"), ("255.255.255.0/24", "broadcast"),
    ("10.96.0.0/31", "too small"), ("banana", "not a CIDR"), ("10.96.0.1", "no prefix length"),
]


@pytest.mark.parametrize("cidr,reason", REFUSED)
def test_refused_with_field_and_value(cidr: str, reason: str) -> None:
    with pytest.raises(ValidationError) as e:
        AllocatorConfig(cidr)
    (p,) = e.value.problems
    assert (p.field, p.value) == ("serviceCIDR", cidr) and reason in p.reason


@pytest.mark.parametrize("cidr", ["10.96.0.0/12", "172.20.0.0/16", "192.168.0.0/24", "1.0.0.0/8", "10.96.0.5/24",
                                  "fd00:10:96::/112", "fd00::/108", "2001:db8::/126"])
def test_accepted(cidr: str) -> None:
    assert str(check_service_cidr(cidr)) == str(AllocatorConfig(cidr).service_cidr)


@pytest.mark.parametrize("text,families", [
    ("10.96.0.0/12,fd00:10:96::/112", ("IPv4", "IPv6")),
    (" fd00:10:96::/112 , 10.96.0.0/12", ("IPv6", "IPv4")),  # an IPv6-primary dual-stack cluster
    ("fd00:10:96::/112", ("IPv6",)),
])
def test_dual_stack_pairs_keep_their_order(text: str, families: tuple[str, ...]) -> None:
    cfg = AllocatorConfig(text)
    assert cfg.families == families
    assert cfg.service_cidr == ",".join(p.strip() for p in text.split(","))
    assert [str(cfg.cidr_of(f)) for f in families] == [p.strip() for p in text.split(",")]


@pytest.mark.parametrize("text,field,reason", [
    ("10.96.0.0/12,10.100.0.0/16", "serviceCIDR", "different IP families"),
    ("fd00::/112,fd01::/112", "serviceCIDR", "different IP families"),
    ("10.96.0.0/12,fd00::/112,10.1.0.0/16", "serviceCIDR", "at most two"),
    ("10.96.0.0/12,fd00::/100", "serviceCIDR[1]", "too large"),
    ("10.96.0.0/31,fd00::/112", "serviceCIDR[0]", "too small"),
    ("10.96.0.0/12,", "serviceCIDR[1]", "not a CIDR"),
])
def test_bad_pairs_name_the_entry(text: str, field: str, reason: str) -> None:
    with pytest.raises(ValidationError) as e:
        AllocatorConfig(text)
    (p,) = e.value.problems
    assert p.field == field and reason in p.reason, p


def _apply(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "a.yaml").write_text(SVC)
    import os

    e = {k: v for k, v in os.environ.items() if k != "PODNET_SERVICE_CIDR"} | (env or {})
    return subprocess.run([sys.executable, "-m", "podnet.cli.main", "--store", f"sqlite://{tmp_path}/s.db", "apply",
                           "-f", str(tmp_path / "a.yaml"), *args], capture_output=True, text=True, env=e,
                          timeout=60, check=False)


@pytest.mark.parametrize("cidr", ["::/100", "0.0.0.0/0", "10.96.0.0/12,10.1.0.0/16"])
def test_cli_option_and_environment_refuse_and_store_nothing(tmp_path: Path, cidr: str) -> None:
    r = _apply(tmp_path, "--service-cidr", cidr)
    assert r.returncode == 1 and f"--service-cidr: {cidr!r}" in r.stderr, r.stderr
    r = _apply(tmp_path, env={"PODNET_SERVICE_CIDR": cidr})
    # typer reads the environment into the option (envvar=): either name points at the input
    assert r.returncode == 1 and f": {cidr!r}: " in r.stderr and "SERVICE" in r.stderr.upper(), r.stderr
    from podnet.store.sqlite import SqliteStore

    with SqliteStore(f"sqlite://{tmp_path}/s.db") as s:
        assert s.list("/").items == []
    assert _apply(tmp_path, "--service-cidr", "10.100.0.0/16").returncode == 0
