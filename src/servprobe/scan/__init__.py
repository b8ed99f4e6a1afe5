"""Targets, port lists, the port table and the connect/UDP port scan.

The package is also the API entry point `servprobe.scan(targets, ports=..., **options)`:
`servprobe.scan` names this package as soon as any of its modules is imported, so the
package itself is made callable (calling it is servprobe.api.scan).
"""

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from servprobe.api import scan

        return scan(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
