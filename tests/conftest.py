"""Shared pytest fixtures: the real Debian daemons of tests/daemons.py, session-scoped.

Each daemon starts at most once per test session, on first use, and stops at session end
(also when tests fail). A daemon that cannot start makes the tests using it error out with
its log: a missing package or a broken daemon is a failure, never a skip.
Tests using these fixtures should carry `pytest.mark.daemon`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import daemons  # tests/ is not a package; helpers are imported by name
import rpcservers
from daemons import Daemon
from extras import skip_allowed


@pytest.fixture(scope="session")
def sshd_daemon() -> Iterator[Daemon]:
    with daemons.sshd() as d:
        yield d


@pytest.fixture(scope="session")
def nginx_daemon() -> Iterator[Daemon]:
    with daemons.nginx() as d:
        yield d


@pytest.fixture(scope="session")
def vsftpd_daemon() -> Iterator[Daemon]:
    with daemons.vsftpd() as d:
        yield d


@pytest.fixture(scope="session")
def postfix_daemon() -> Iterator[Daemon]:
    with daemons.postfix() as d:
        yield d


@pytest.fixture(scope="session")
def redis_daemon() -> Iterator[Daemon]:
    with daemons.redis() as d:
        yield d


@pytest.fixture(scope="session")
def memcached_daemon() -> Iterator[Daemon]:
    with daemons.memcached() as d:
        yield d


@pytest.fixture(scope="session")
def dnsmasq_daemon() -> Iterator[Daemon]:
    with daemons.dnsmasq() as d:
        yield d


@pytest.fixture(scope="session")
def postgresql_daemon() -> Iterator[Daemon]:
    with daemons.postgresql() as d:
        yield d


@pytest.fixture(scope="session")
def stunnel_daemon(sshd_daemon: Daemon, redis_daemon: Daemon) -> Iterator[Daemon]:
    """stunnel4 with endpoints stunnel-ssh (→ sshd) and stunnel-redis (→ redis)."""
    with daemons.stunnel({"ssh": sshd_daemon, "redis": redis_daemon}) as d:
        yield d


@pytest.fixture(scope="session")
def all_daemons(
    sshd_daemon: Daemon,
    nginx_daemon: Daemon,
    vsftpd_daemon: Daemon,
    postfix_daemon: Daemon,
    redis_daemon: Daemon,
    memcached_daemon: Daemon,
    dnsmasq_daemon: Daemon,
    postgresql_daemon: Daemon,
    stunnel_daemon: Daemon,
) -> dict[str, Daemon]:
    """Every daemon, by name (the same instances the single fixtures give)."""
    return {
        d.name: d
        for d in (sshd_daemon, nginx_daemon, vsftpd_daemon, postfix_daemon, redis_daemon,
                  memcached_daemon, dnsmasq_daemon, postgresql_daemon, stunnel_daemon)
    }


@pytest.fixture(scope="module")
def netns() -> Iterator[rpcservers.Netns]:
    """A network namespace of this module's own (loopback only), for daemons that need fixed
    ports such as rpcbind's 111 and for scans of fixed port ranges: never colliding with what
    the host (or another test) runs on those ports."""
    with rpcservers.netns() as ns:
        yield ns


@pytest.fixture
def inside_netns(netns: rpcservers.Netns) -> Iterator[None]:
    """The test body runs inside netns (use with pytest.mark.usefixtures)."""
    with netns.entered():
        yield


@pytest.fixture(scope="session", autouse=True)
def _scan_stores_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Scans started by tests keep their default stores (issue 7) in a temp dir, not in
    the user's ~/.local/state/servprobe/scans; subprocesses inherit the variable."""
    import os

    old = os.environ.get("SERVPROBE_STORE_DIR")
    os.environ["SERVPROBE_STORE_DIR"] = str(tmp_path_factory.mktemp("scan-stores"))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SERVPROBE_STORE_DIR", None)
        else:
            os.environ["SERVPROBE_STORE_DIR"] = old


def _fail_skip(report: pytest.CollectReport | pytest.TestReport) -> None:
    report.outcome = "failed"
    report.longrepr = (f"skipped, which fails the run (tests/README.md: make the prerequisite "
                       f"installable by `make test`): {report.longrepr}")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):  # type: ignore[no-untyped-def]
    """The same for a whole module skipped at import (pytest.importorskip at module level)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not skip_allowed(str(report.longrepr)):
        _fail_skip(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    """A skip fails the run, with CI set or not: `make test` installs every prerequisite, so
    a skip means a missing install step or a broken module. The one exception is a test
    naming an optional extra that `make test` does not install here (extras.require)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and not skip_allowed(str(report.longrepr)):
        _fail_skip(report)
