"""`podnet lab ui` on a real 3-node lab: the snapshot holds the lab's nodes, pods and Services as the real
kubectl lists them, and the page in Debian's headless Chromium (through chromium-driver and Selenium) shows
them without console errors, draws a trace with the same hops as `podnet trace -o json`, shows the kernel's
verdict when asked to verify, and drops a pod that kubectl deletes within 2 s."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PODNET = str(Path(sys.executable).with_name("podnet"))
KUBECTL = shutil.which("kubectl")
EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "webapp1"
SVG = "{http://www.w3.org/2000/svg}"
CLIENT = """\
apiVersion: v1
kind: Pod
metadata: {name: client, labels: {app: client}}
spec:
  nodeName: node1
  containers: [{name: client, command: [sleep, infinity]}]
"""
SERVICE = "webapp1-clusterip-svc"
BACKGROUND = (251, 251, 248)  # the scene's #fbfbf8
TRACE_ORANGE = (232, 89, 12)  # .trace-ok's #e8590c


def _until(fn: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        out = fn()
        if out:
            return out
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {out!r})")
        time.sleep(every)


@dataclass
class Lab:
    name: str
    store: str
    kubeconfig: str

    def kubectl(self, *args: str, input: str | None = None) -> str:
        r = subprocess.run([KUBECTL or "kubectl", "--kubeconfig", self.kubeconfig, *args], capture_output=True,
                           text=True, input=input, timeout=90)
        assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stdout}{r.stderr}"
        return r.stdout

    def podnet(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([PODNET, "--store", self.store, *args], capture_output=True, text=True, timeout=120)
        assert not check or r.returncode == 0, f"podnet {' '.join(args)} -> {r.returncode}: {r.stdout}{r.stderr}"
        return r

    def names(self, kind: str) -> set[str]:
        items = json.loads(self.kubectl("get", kind, "-A", "-o", "json"))["items"]
        ns = (lambda m: f"{m['namespace']}/{m['name']}") if kind != "nodes" else (lambda m: m["name"])
        return {ns(i["metadata"]) for i in items}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    if KUBECTL is None:
        pytest.skip("kubectl is not installed")
    name = f"ui{secrets.token_hex(3)}"
    store = f"sqlite:////run/podnet/labs/{name}/state.db"
    try:
        r = subprocess.run([PODNET, "--store", store, "lab", "up", "--name", name, "--nodes", "3"],
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stdout + r.stderr
        kc = subprocess.run([PODNET, "lab", "kubeconfig", "--name", name], capture_output=True, text=True,
                            check=True).stdout.strip()
        lab = Lab(name, store, kc)
        lab.kubectl("apply", "-f", str(EXAMPLES))
        lab.kubectl("apply", "-f", "-", input=CLIENT)
        lab.kubectl("wait", "--for=condition=Ready", "pod", "--all", "--timeout=90s")
        # the ClusterIP's rules are on node1 (where the client is) with both endpoints
        _until(lambda: lab.podnet("lab", "exec", "--name", name, "node1", "--", "iptables-save", "-t", "nat",
                                  check=False).stdout.count(f"default/{SERVICE} -> ") >= 2, 60, "rules on node1")
        yield lab
    finally:
        subprocess.run([PODNET, "--store", store, "lab", "down", "--name", name], capture_output=True, timeout=180)


def _svg_ids(root: ET.Element, kind: str) -> set[str]:
    return {g.get("data-id", "") for g in root.iter(f"{SVG}g") if g.get("data-kind") == kind}


def test_snapshot_is_svg_with_the_labs_objects(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "lab.svg"
    r = lab.podnet("lab", "ui", "--name", lab.name, "--snapshot", str(out))
    assert f"wrote {out}" in r.stdout
    root = ET.parse(out).getroot()
    assert root.tag == f"{SVG}svg"
    assert _svg_ids(root, "node") == lab.names("nodes")
    assert _svg_ids(root, "pod") == lab.names("pods")
    assert _svg_ids(root, "svc") == lab.names("services")
    # the chains the snapshot names are the chains node1's kernel holds
    nat = lab.podnet("lab", "exec", "--name", lab.name, "node1", "--", "iptables-save", "-t", "nat").stdout
    texts = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    chains = {w for w in texts.split() if w.startswith(("KUBE-SVC-", "KUBE-SEP-"))}
    held = {line[1:].split()[0] for line in nat.splitlines() if line.startswith((":KUBE-SVC-", ":KUBE-SEP-"))}
    assert chains == held  # every Service port's chain and every endpoint's, kube-dns's included
    assert len(chains) >= 6  # at least the two webapp1 Services with two endpoints each

    traced = tmp_path / "traced.svg"
    lab.podnet("lab", "ui", "--name", lab.name, "--snapshot", str(traced), "--trace-from", "client",
               "--trace-to", f"svc/{SERVICE}")
    (path,) = [g for g in ET.parse(traced).getroot().iter(f"{SVG}g") if g.get("data-kind") == "trace"]
    assert len(list(path.iter(f"{SVG}circle"))) >= 5

    bad = lab.podnet("lab", "ui", "--name", lab.name, "--listen", "0.0.0.0:0", check=False)
    assert bad.returncode == 1 and "not a loopback address" in bad.stderr


# ---- the page in a real browser ------------------------------------------------------------------------------


def _browser() -> tuple[str, str]:
    """Debian's chromium and chromedriver; installed here if they are missing and can be (CI has them from
    `make test`, whose deps step installs APT_PACKAGES)."""
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if not all(found) and os.geteuid() == 0:
        r = subprocess.run(["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"], capture_output=True,
                           text=True, timeout=900, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        found = shutil.which("chromium"), shutil.which("chromedriver")
        if not all(found):
            pytest.skip(f"chromium/chromium-driver are not installed and apt-get could not install them: "
                        f"{r.stderr.strip()[-300:]}")
    if not all(found):
        pytest.skip("chromium/chromium-driver are not installed (make deps installs them; needs root)")
    return found  # type: ignore[return-value]


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for t in os.listdir(f"/proc/{pid}/task")
                for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
    except OSError:
        return []


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        for c in _children(todo.pop()):
            out.append(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.fixture
def ui_url(lab: Lab, tmp_path: Path) -> Iterator[str]:
    log = tmp_path / "ui.log"
    with log.open("w") as err:
        proc = subprocess.Popen([PODNET, "lab", "ui", "--name", lab.name, "--listen", "127.0.0.1:0"],
                                stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "podnet lab ui: lab NAME at http://127.0.0.1:PORT/"
        assert "http://127.0.0.1:" in line, f"no URL from podnet lab ui: {line!r}\n{log.read_text()}"
        yield line.split(" at ", 1)[1].strip()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (a test extra) is not installed")
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = _browser()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1600,1000", f"--user-data-dir={tmp_path / 'profile'}", "--no-first-run"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(driver_path, log_output=str(tmp_path / "chromedriver.log"))
    d = webdriver.Chrome(service=service, options=opts)
    d.set_page_load_timeout(30)
    d.set_script_timeout(30)
    driver_pid = service.process.pid
    try:
        yield d
    finally:
        spawned = _descendants(driver_pid)
        try:
            d.quit()
        finally:
            for pid in [*spawned, driver_pid]:  # whatever quit left behind, by pid
                if _alive(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            assert not [p for p in [*spawned, driver_pid] if _alive(p)]


def _page_ids(d: Any, kind: str) -> set[str]:
    return set(d.execute_script(
        "return [...document.querySelectorAll(`#scene g[data-kind='${arguments[0]}']`)].map(g => g.dataset.id)",
        kind))


def _console_errors(d: Any) -> list[str]:
    return [e["message"] for e in d.get_log("browser") if e.get("level") == "SEVERE"]


def _screenshot_stats(png: Path) -> tuple[int, float, int]:
    """(distinct colours, share of pixels that are not the background, pixels in the trace's colour)."""
    from PIL import Image

    img = Image.open(png).convert("RGB")
    counts = img.getcolors(img.width * img.height)  # [(count, (r, g, b)), ...]
    assert counts is not None
    total = img.width * img.height
    background = sum(n for n, c in counts if c in (BACKGROUND, (255, 255, 255)))
    orange = sum(n for n, c in counts if all(abs(a - b) <= 24 for a, b in zip(c, TRACE_ORANGE, strict=True)))
    return len(counts), 1 - background / total, orange


def _wait_trace(d: Any, timeout: float) -> str:
    def done() -> str:
        text = d.execute_script("return document.getElementById('trace-verdict').textContent")
        return "" if text.startswith("tracing") else text

    return _until(done, timeout, "the trace's answer on the page", every=0.25)


def test_the_page_in_chromium(lab: Lab, ui_url: str, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    d = browser
    d.get(ui_url)
    want = {"node": lab.names("nodes"), "pod": lab.names("pods"), "svc": lab.names("services")}
    assert len(want["node"]) == 3 and len(want["pod"]) == 3
    assert want["svc"] == {f"default/{SERVICE}", "default/webapp1-nodeport-svc", "kube-system/kube-dns"}
    _until(lambda: d.find_element(By.ID, "status").get_attribute("data-state") == "connected"
           and all(_page_ids(d, k) == v for k, v in want.items()), 20, "every node, pod and Service on the page")
    assert _console_errors(d) == []
    shot = tmp_path / "page.png"
    d.save_screenshot(str(shot))
    colours, drawn, _ = _screenshot_stats(shot)
    assert colours > 40 and drawn > 0.08, (colours, drawn)

    # a trace of the demo's ClusterIP request: the page's hops are `podnet trace -o json`'s
    cli = json.loads(lab.podnet("trace", "--lab", lab.name, "--from", "client", "--to", f"svc/{SERVICE}",
                                "-o", "json").stdout)
    d.find_element(By.ID, "trace-from").send_keys("client")
    d.find_element(By.ID, "trace-to").send_keys(f"svc/{SERVICE}")
    d.find_element(By.ID, "trace-run").click()
    verdict = _wait_trace(d, 60)
    assert verdict.startswith(f"{cli['verdict']}: tcp "), verdict
    page_outcomes = d.execute_script(
        "return [...document.querySelectorAll('#trace-outcomes li')].map(li => li.dataset.endpoint)")
    assert sorted(page_outcomes) == sorted(o["endpoint"] for o in cli["outcomes"])
    drawn_endpoint = page_outcomes[0]
    (expected,) = [o for o in cli["outcomes"] if o["endpoint"] == drawn_endpoint]
    page_hops = d.execute_script(
        "return [...document.querySelectorAll('#trace-hops li')].map(li => "
        "[li.dataset.node, li.dataset.step, li.dataset.chain, li.lastChild.textContent.trim()])")
    assert page_hops == [[h["node"], h["step"], h["chain"] or "", h["detail"]] for h in expected["hops"]]
    n_points = d.execute_script("return document.querySelectorAll('#scene g[data-kind=trace] circle').length")
    assert n_points >= 5
    shot = tmp_path / "traced.png"
    d.save_screenshot(str(shot))
    _, _, orange = _screenshot_stats(shot)
    assert orange > 500, f"the trace's path is not on the screenshot ({orange} pixels of its colour)"

    # --verify: the kernel's own trace of real probes, and its verdict on the page
    d.find_element(By.ID, "trace-verify").click()
    d.find_element(By.ID, "trace-run").click()
    _wait_trace(d, 90)
    kernel = d.find_element(By.ID, "trace-kernel")
    assert kernel.is_displayed() and kernel.text.startswith("the kernel agrees"), kernel.text

    # a pod deleted with kubectl leaves the page, with its arrows, within 2 s
    gone = next(p for p in want["pod"] if p.split("/")[1].startswith("webapp1-"))
    lab.kubectl("delete", "pod", gone.split("/")[1])
    _until(lambda: gone not in _page_ids(d, "pod"), 2.0, f"{gone} gone from the page", every=0.05)
    ip_arrows = _page_ids(d, "edge")
    # one endpoint left behind each of webapp1's two Services (kube-dns's endpoints are the nodes' DNS
    # processes, not pods: no arrows)
    assert len(ip_arrows) == 2, ip_arrows
    assert _page_ids(d, "pod") == want["pod"] - {gone}
    assert _console_errors(d) == []
