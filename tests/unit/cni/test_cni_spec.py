"""CNI protocol helpers against the reference outputs in shared/reference/cni-reference-outputs/."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podnet.cni import spec
from podnet.cni.spec import CniError

REF = "/work/shared/reference/cni-reference-outputs"


def ref_stdout(step: str) -> str:
    path = os.path.join(REF, step, "stdout")
    if not os.path.exists(path):
        pytest.skip("reference outputs not available")
    with open(path) as f:
        return f.read()


@pytest.mark.parametrize("step,version", [("10-add-c1", "1.0.0"), ("20-add-v0.4.0", "0.4.0"),
                                          ("20-add-v0.3.1", "0.3.1"), ("20-add-v0.2.0", "0.2.0")])
def test_render_is_byte_identical_to_reference(step: str, version: str) -> None:
    """Parsing a captured result and printing it again in its version gives the reference's exact bytes."""
    text = ref_stdout(step)
    res = spec.parse_result(json.loads(text))
    assert spec.go_json(spec.render_result(res, version)) == text


def test_version_conversion_between_shapes() -> None:
    res = spec.parse_result(json.loads(ref_stdout("10-add-c1")))
    v031 = spec.render_result(res, "0.3.1")
    assert v031["ips"][0] == {"version": "4", "interface": 2, "address": "10.244.1.2/24", "gateway": "10.244.1.1"}
    v020 = spec.render_result(res, "0.2.0")
    assert v020 == {"cniVersion": "0.2.0", "ip4": {"ip": "10.244.1.2/24", "gateway": "10.244.1.1",
                                                   "routes": [{"dst": "0.0.0.0/0"}]}, "dns": {}}
    back = spec.parse_result(v020)
    assert back["ips"] == [{"address": "10.244.1.2/24", "gateway": "10.244.1.1"}]
    assert spec.render_result(res, "1.1.0")["cniVersion"] == "1.1.0"


def test_error_json_shape_matches_reference() -> None:
    text = ref_stdout("31b-err-version-9.9.9")
    ref = json.loads(text)
    with pytest.raises(CniError) as e:
        spec.check_supported("9.9.9", spec.SUPPORTED_VERSIONS[:-1])
    assert spec.go_json(e.value.to_dict()) == text
    assert e.value.to_dict() == ref


def test_version_json() -> None:
    out = spec.version_json()
    assert out.endswith("}\n") and " " not in out
    assert json.loads(out)["supportedVersions"][-1] == "1.1.0"


@pytest.mark.parametrize("cid,code", [("", 3), ("bad/id", 4), ("../x", 4), ("-x", 4), ("a b", 4), ("abc\n", 4),
                                      ("é", 4)])
def test_bad_container_ids(cid: str, code: int) -> None:
    with pytest.raises(CniError) as e:
        spec.validate_container_id(cid)
    assert e.value.code == code


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a:b", "a b", "a\tb", "x" * 16, "é" * 8])
def test_bad_ifnames(name: str) -> None:
    with pytest.raises(CniError) as e:
        spec.validate_ifname(name)
    assert e.value.code == 4


def test_good_ids() -> None:
    spec.validate_container_id("0123abc_.-Z")
    spec.validate_ifname("eth0")
    spec.validate_ifname("x" * 15)


def test_cni_args() -> None:
    assert spec.parse_cni_args("IgnoreUnknown=1;FOO=bar;IP=10.0.0.1", ("IP",)) == {"IP": "10.0.0.1"}
    assert spec.parse_cni_args("", ("IP",)) == {}
    with pytest.raises(CniError) as e:
        spec.parse_cni_args("FOO=bar", ("IP",))
    assert e.value.msg == 'ARGS: unknown args ["FOO=bar"]'
    with pytest.raises(CniError) as e:
        spec.parse_cni_args("FOO", ("IP",))
    assert e.value.msg == 'ARGS: invalid pair "FOO"'
    with pytest.raises(CniError):
        spec.parse_cni_args("IgnoreUnknown=maybe;FOO=1", ())
    with pytest.raises(CniError):  # IgnoreUnknown=false does not ignore
        spec.parse_cni_args("IgnoreUnknown=false;FOO=1", ())


def test_decode_config_messages() -> None:
    with pytest.raises(CniError) as e:
        spec.decode_config(b'{"cniVersion":"1.0.0","name":"refnet","type":"bridge",')
    assert (e.value.code, e.value.msg) == (6, "error unmarshall network config: unexpected end of JSON input")
    with pytest.raises(CniError) as e:
        spec.decode_config(b"[]")
    assert e.value.code == 6


def test_version_tuple() -> None:
    assert spec.version_tuple("1.1") == (1, 1, 0)
    assert spec.version_tuple("0.4.0") < spec.version_tuple("1.0.0")
    for bad in ("", "a.b", "1.2.3.4"):
        with pytest.raises(CniError):
            spec.version_tuple(bad)


def test_gc_attachments_both_keys() -> None:
    a = {"cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]}
    b = {"cni.dev/attachments": [{"containerID": "c1", "ifname": "eth0"}]}
    assert spec.gc_valid_attachments(a) == spec.gc_valid_attachments(b) == {("c1", "eth0")}
    with pytest.raises(CniError):
        spec.gc_valid_attachments({"cni.dev/valid-attachments": "nope"})


_ip4 = st.tuples(*[st.integers(0, 255)] * 4, st.integers(8, 30)).map(lambda t: f"{t[0]}.{t[1]}.{t[2]}.{t[3]}/{t[4]}")


@given(ips=st.lists(_ip4, min_size=1, max_size=3), version=st.sampled_from(["0.3.0", "0.3.1", "0.4.0", "1.0.0",
                                                                           "1.1.0"]))
def test_render_parse_roundtrip(ips: list[str], version: str) -> None:
    """Any result survives printing in a 0.3+ version and parsing back."""
    res = {"interfaces": [{"name": "eth0", "mac": "00:11:22:33:44:55", "sandbox": "/run/netns/x"}],
           "ips": [{"interface": 0, "address": a, "gateway": a.split("/")[0]} for a in ips],
           "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}], "dns": {"nameservers": ["1.1.1.1"]}}
    out = spec.render_result(res, version)
    assert out["cniVersion"] == version
    assert spec.parse_result(json.loads(spec.go_json(out))) == res
