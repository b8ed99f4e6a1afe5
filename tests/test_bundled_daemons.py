"""Issue 13's real-daemon figures for our bundled database, against nmap's live answers.

Every real daemon the suite can start (tests/bundled_daemon_set.py: tests/daemons.py's set,
tests/daemons_post.py's daemons, and tests/daemons_capture.py's daemons whose package the
Makefile installs) is scanned once with `servprobe --db bundled --version-scripts none` and
once with `nmap -sV` (nmap's own database; its answer is the expected value, nothing here is
written from our own output). Goal: the service nmap names on >= 95% of the endpoints nmap
names, and nmap's product on >= 85% of those where nmap names one. An endpoint whose nmap
answer is a race (bundled_daemon_set.RACY: coturn's TCP side) is listed, left out of both.
`python bench/bench_bundled.py` prints the per-endpoint table.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import bundled_daemon_set as bset
import daemons

pytestmark = [pytest.mark.daemon, pytest.mark.slow]


@pytest.fixture(scope="module")
def rows(all_daemons: dict[str, daemons.Daemon]) -> Iterator[list[bset.Row]]:
    with bset.whole_set(all_daemons) as running:
        pairs = daemons.endpoints(running)
        ours = bset.scan_bundled(pairs)
        theirs = bset.scan_nmap(pairs)
        table = bset.compare(running, theirs, ours)
        print("\n" + bset.table(table))
        yield table


def test_both_tools_answer_every_endpoint(rows: list[bset.Row]) -> None:
    """No endpoint silently left out of the figures: each tool reports each port."""
    assert len(rows) >= 30, [r.endpoint for r in rows]
    missing = [
        r.endpoint
        for r in rows
        if r.ours.name is None and r.ours.product is None and r.nmap.name is not None
    ]
    assert missing == [], missing
    # the figures need enough endpoints nmap names to mean something
    named = [r for r in rows if r.counted]
    assert len(named) >= 20 and sum(bool(r.nmap.product) for r in named) >= 15


def test_bundled_service_right_on_95_percent(rows: list[bset.Row]) -> None:
    service, _ = bset.figures(rows)
    wrong = [
        (r.endpoint, r.nmap.service, r.ours.service)
        for r in rows
        if r.counted and not r.service_right
    ]
    assert service >= 95.0, f"service right {service}%; differs from nmap: {wrong}"


def test_bundled_names_nmaps_product_on_85_percent(rows: list[bset.Row]) -> None:
    _, product = bset.figures(rows)
    wrong = [
        (r.endpoint, r.nmap.product, r.ours.product)
        for r in rows
        if r.counted and r.nmap.product and not r.product_right
    ]
    assert product >= 85.0, f"nmap's product {product}%; differs: {wrong}"
