"""The KServe v2 gRPC messages and stubs (``service_pb2``, ``service_pb2_grpc``) that ``tritonclient`` ships, imported
without ``tritonclient.grpc``'s package ``__init__``.

That ``__init__`` imports its client, which imports numpy and ml_dtypes: a third of the CPU a new gateway spent
importing its serving side before ``/ready`` (issue #14, cold start), for nothing the gateway uses. A later
``import tritonclient.grpc`` (a test, a client in the same process) gets the same modules
(:mod:`runtime.package_modules`).
"""

from __future__ import annotations

import importlib
from typing import Any

from runtime.package_modules import package_init_skipped

with package_init_skipped("tritonclient.grpc"):
    service_pb2: Any = importlib.import_module("tritonclient.grpc.service_pb2")
    service_pb2_grpc: Any = importlib.import_module("tritonclient.grpc.service_pb2_grpc")
