# Two commands matter (see README): `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# Everything the test suite needs from Debian: nmap (comparison + its database, DTD, ndiff),
# xmllint, and the real daemons the integration tests start on loopback (tests/daemons.py).
# dnsmasq-base: the binary without the system service, whose start would fight over port 53.
# iproute2 (ip netns) and util-linux (unshare): rpcbind/rpc.statd run in a namespace of the test's.
# netbase: /etc/services, which tests/test_scan_ports.py rebuilds the bundled table from.
APT_PACKAGES = nmap nmap-common ndiff libxml2-utils openssl ssl-cert \
	openssh-server openssh-client nginx vsftpd postfix redis-server memcached dnsmasq-base \
	postgresql stunnel4 rpcbind nfs-common tmux chromium chromium-driver iproute2 util-linux \
	rabbitmq-server mosquitto snmpd slapd samba prosody krb5-kdc varnish haproxy xinetd git coturn ngircd strongswan-charon strongswan-swanctl podman netbase

.PHONY: run test venv deps apt lint bench clean

$(BIN)/servprobe: pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv python3-pip; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[fast]'
	@touch $@

venv: $(BIN)/servprobe

## make run: install and scan localhost (override with ARGS="-p 22,80 10.0.0.1")
run: venv
	$(BIN)/servprobe $(ARGS)

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y $$missing; \
	fi

deps: venv apt
	$(BIN)/pip install -q -e '.[fast,test,dask]'

lint: deps
	$(BIN)/ruff check src tests bench

## make test: install everything the tests need, then lint and run them all
test: deps
	$(BIN)/ruff check src tests bench
	$(BIN)/pytest

bench: deps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
