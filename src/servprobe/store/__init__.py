"""Durable results: the SQLite scan store, resume support and the CLI hooks around them.

    store = Store.open("scan.sqlite")
    scan_id = store.begin_scan(argv, {"targets": [...], "ports": "1-1000"})
    store.record(scan_id, result)          # committed on return: survives kill -9
    store.end_scan(scan_id, "done")
    store, state = Store.resume("scan.sqlite")   # state.args, state.results, state.finished
"""

from servprobe.store.paths import default_store_dir, default_store_path
from servprobe.store.sqlite import (
    PortScanState,
    ResumeState,
    ScanInfo,
    Store,
    StoreError,
    result_from_json,
    result_to_json,
)

__all__ = [
    "PortScanState",
    "ResumeState",
    "ScanInfo",
    "Store",
    "StoreError",
    "default_store_dir",
    "default_store_path",
    "result_from_json",
    "result_to_json",
]
