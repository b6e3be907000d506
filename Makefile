# The two commands of the README. Both install what they need first and are idempotent.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := iproute2 iptables nftables conntrack iputils-ping curl iperf3 etcd-server etcd-client \
                containernetworking-plugins python3-nftables \
                bind9-dnsutils chromium chromium-driver
NFT_SHIM := $(VENV)/nft-shim

.PHONY: demo test bench lint deps venv clean .deps-apt

demo: deps
	$(VENV)/bin/podnet demo

test: deps
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --durations=30 tests

bench: deps
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

deps: .deps-apt venv

# apt is slow even when there is nothing to do, so it runs only when a package is missing.
.deps-apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@# The Debian units would start etcd / iperf3 in the root namespace; tests start their own.
	@systemctl disable --now etcd >/dev/null 2>&1 || true

venv: $(VENV)/.installed $(VENV)/.cni-launchers

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@# The CNI plugins start once per pod: ship their bytecode (an editable install compiles nothing, and
	@# PYTHONDONTWRITEBYTECODE may be set), or every ADD pays ~20 ms recompiling.
	$(PY) -m compileall -q src/podnet >/dev/null
	@# libnftables' Python binding comes from Debian (python3-nftables); expose only that package to the venv.
	mkdir -p $(NFT_SHIM) && ln -sfn /usr/lib/python3/dist-packages/nftables $(NFT_SHIM)/nftables
	echo "$(abspath $(NFT_SHIM))" > $$($(PY) -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])')/podnet-nftables.pth
	touch $@

# The CNI plugins start once per pod: their console scripts become launchers that run python -I -S (no site,
# no .pth files) and find podnet themselves (src/podnet/cni/launcher.py). Again after every pip install.
$(VENV)/.cni-launchers: $(VENV)/.installed src/podnet/cni/launcher.py
	$(PY) -m podnet.cni.launcher $(VENV)/bin
	touch $@

clean:
	rm -rf $(VENV) build src/*.egg-info
