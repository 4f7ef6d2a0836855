# Two entry points, each doing all of its own set-up on a fresh Debian 12 machine
# as root: `make demo` (the main job) and `make test` (the whole test suite).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# dnsmasq-base: the dnsmasq program the DNS tests run in a namespace, without the system service.
# wrk: the HTTP load generator of scripts/bench/http_serve.py and lb_relay.py.
DEB_PACKAGES := qemu-system-x86 busybox-static iperf3 socat iproute2 ethtool netcat-openbsd \
	curl cpio kmod dpdk dpdk-dev tcpdump tshark python3-venv gcc libc6-dev python3-dev openssl dnsmasq-base wrk
SETUP_STAMP := $(VENV)/.setup-done

.PHONY: demo test setup debs venv bench clean

demo: setup
	$(VENV)/bin/mnet demo

test: setup
	$(PY) -m pytest -p no:cacheprovider -q -ra $(PYTEST_ARGS)

bench: setup
	$(PY) scripts/bench/guest_throughput.py
	$(PY) scripts/bench/ring_datapath.py
	$(PY) scripts/bench/switch_burst.py
	$(PY) scripts/bench/driver_rings.py
	$(PY) scripts/bench/udp_rr.py
	$(PY) scripts/bench/tcp_bulk.py
	$(PY) scripts/bench/tcp_lossy.py --mbytes 10
	$(PY) scripts/bench/aio_streams.py
	$(PY) scripts/bench/http_serve.py
	$(PY) scripts/bench/lb_relay.py

setup: $(SETUP_STAMP)

# The C kernels compile at install: a changed kernel source installs again.
$(SETUP_STAMP): pyproject.toml setup.py Makefile $(wildcard nicdev/virtio/csrc/*)
	@$(MAKE) --no-print-directory debs venv
	@touch $@

# apt-get only when a package is missing, so repeated runs stay offline and fast.
debs:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q --no-install-recommends $$missing </dev/null; \
	fi

venv:
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat

clean:
	rm -rf $(VENV) build *.egg-info
