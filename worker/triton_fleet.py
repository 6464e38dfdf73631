"""Talk to every configured Triton endpoint: explicit load with a deadline, readiness, unload, infer.

All endpoints share one model repository; a promotion loads the model on each of them and is
served only once every one reports it READY. Connection failures, 5xx answers and deadlines on
health calls are transient; a load that Triton refuses (``[400] load failed ...``) is permanent,
and so is a load that does not finish by the deadline (this Triton build can hang forever on a
broken model folder, which the worker validates against before loading).

Triton may restrict its model-repository API (load, unload, repository index) to requests carrying
an admin header (``--http-restricted-api`` / ``--grpc-restricted-protocol``). Only those calls carry
``PROMOTER_TRITON_ADMIN_TOKEN``; liveness, readiness and inference never do. Over gRPC Triton
expects the header name prefixed with ``triton-grpc-protocol-`` and refuses a missing or wrong one
with UNAVAILABLE (HTTP: 403); either refusal is a permanent failure naming the setting to fix.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
import tritonclient.grpc as grpc_client
import tritonclient.grpc.aio as grpc_aio
import tritonclient.http as http_client
import tritonclient.http.aio as http_aio
from tritonclient.utils import InferenceServerException

from runtime.settings import TritonSettings
from schemas.promotion_rejected import ReasonCode
from worker.errors import PermanentFailure, TransientFailure

T = TypeVar("T")

GRPC_RESTRICTED_HEADER_PREFIX = "triton-grpc-protocol-"  # Triton prefixes --grpc-restricted-protocol keys
RESTRICTED_API_REFUSAL = "is restricted, expecting header"  # both protocols: "This API/protocol is restricted, ..."


def admin_headers(settings: TritonSettings) -> dict[str, str] | None:
    """The header model-repository calls carry, named as Triton expects it on the configured protocol."""
    if settings.admin_token is None:
        return None
    name = settings.admin_header
    if settings.protocol == "grpc":
        name = GRPC_RESTRICTED_HEADER_PREFIX + name
    return {name: settings.admin_token.get_secret_value()}


def is_access_refusal(error: InferenceServerException) -> bool:
    """Triton refused a restricted model-repository call: no admin header, or the wrong token."""
    return str(error.status() or "") == "403" or RESTRICTED_API_REFUSAL in (error.message() or "")


def _is_client_error(error: InferenceServerException) -> bool:
    status = str(error.status() or "")
    return status.startswith("4") or status in {"StatusCode.INVALID_ARGUMENT", "StatusCode.NOT_FOUND"}


class TritonEndpoint:
    """One Triton server, over HTTP or gRPC (asyncio clients)."""

    def __init__(self, url: str, settings: TritonSettings) -> None:
        self.url = url
        self.protocol = settings.protocol
        self._load_timeout_s = settings.load_timeout_s
        self._request_timeout_s = settings.request_timeout_s
        self._admin_header = settings.admin_header
        self._admin_headers = admin_headers(settings)  # holds the token: never log or format it
        self._lazy_client: Any = None

    @property
    def _client(self) -> Any:
        """The asyncio client, created on first use (it must be made inside the running loop)."""
        if self._lazy_client is None:
            self._lazy_client = (
                http_aio.InferenceServerClient(self.url, conn_timeout=self._load_timeout_s)
                if self.protocol == "http"
                else grpc_aio.InferenceServerClient(self.url)
            )
        return self._lazy_client

    def _access_refused(self, what: str) -> PermanentFailure:
        sent = "an admin header Triton does not accept" if self._admin_headers else "no admin header"
        return PermanentFailure(
            ReasonCode.TRITON_LOAD_FAILED,
            f"Triton {self.url} refused a model-repository call ({what}): that API is restricted and this worker sent "
            f"{sent}. PROMOTER_TRITON_ADMIN_TOKEN must match the token of Triton's "
            f"--http-restricted-api / --grpc-restricted-protocol flag "
            f"(model-repository:{self._admin_header}=<token>; in Kubernetes Secret triton-admin, key token), "
            "and PROMOTER_TRITON_ADMIN_HEADER its header name.",
        )

    async def _call(self, what: str, call: Callable[[], Awaitable[T]], timeout_s: float) -> T:
        try:
            return await asyncio.wait_for(call(), timeout_s)
        except TimeoutError:
            raise TransientFailure(f"Triton {self.url} did not answer {what} within {timeout_s:g} s") from None
        except InferenceServerException as error:
            if is_access_refusal(error):
                raise self._access_refused(what) from None
            if _is_client_error(error):
                raise
            raise TransientFailure(f"Triton {self.url} failed {what}: {error.message()}") from None
        except (OSError, ConnectionError) as error:  # refused, reset, DNS; aiohttp errors are OSErrors
            raise TransientFailure(f"Triton {self.url} is unreachable ({what}): {error}") from None
        except Exception as error:  # aiohttp / grpc transport errors that are not OSErrors
            if type(error).__module__.split(".")[0] in {"aiohttp", "grpc"}:
                raise TransientFailure(f"Triton {self.url} is unreachable ({what}): {error}") from None
            raise

    async def is_live(self) -> bool:
        live: bool = await self._call("liveness", self._client.is_server_live, self._request_timeout_s)
        return live

    async def load(self, model: str) -> None:
        """Load ``model`` and confirm it is READY, or raise a failure naming the cause."""
        await self.is_live()  # an unreachable server is transient; find out before the long call
        try:
            await asyncio.wait_for(self._client.load_model(model, headers=self._admin_headers), self._load_timeout_s)
        except TimeoutError:
            raise PermanentFailure(
                ReasonCode.TRITON_LOAD_TIMEOUT,
                f"Triton {self.url} did not finish loading {model} within {self._load_timeout_s:g} s; "
                "the model stays unserved. Check the Triton log for the stub's error "
                "(PROMOTER_TRITON_LOAD_TIMEOUT_S sets the deadline).",
            ) from None
        except InferenceServerException as error:
            if is_access_refusal(error):
                raise self._access_refused(f"load of {model}") from None
            if not _is_client_error(error):
                raise TransientFailure(f"Triton {self.url} failed to load {model}: {error.message()}") from None
            raise PermanentFailure(
                ReasonCode.TRITON_LOAD_FAILED, f"Triton {self.url} refused to load {model}: {error.message()}"
            ) from None
        except (OSError, ConnectionError) as error:
            raise TransientFailure(f"Triton {self.url} became unreachable loading {model}: {error}") from None
        ready = await self.is_ready(model)
        if not ready:
            raise PermanentFailure(
                ReasonCode.TRITON_LOAD_FAILED,
                f"Triton {self.url} loaded {model} but does not report it READY",
            )

    async def is_ready(self, model: str) -> bool:
        try:
            ready: bool = await self._call(
                f"readiness of {model}", lambda: self._client.is_model_ready(model), self._request_timeout_s
            )
        except InferenceServerException:
            return False
        return ready

    async def unload(self, model: str) -> None:
        """Unload ``model``; every failure is transient, so retirement tries again once Triton accepts it."""
        try:
            await self._call(
                f"unload of {model}",
                lambda: self._client.unload_model(model, headers=self._admin_headers),
                self._request_timeout_s,
            )
        except InferenceServerException as error:
            raise TransientFailure(f"Triton {self.url} failed to unload {model}: {error.message()}") from None
        except PermanentFailure as refused:
            raise TransientFailure(refused.message) from None

    async def infer(
        self, model: str, input_name: str, batch: np.ndarray[Any, Any], datatype: str, output_name: str
    ) -> np.ndarray[Any, Any]:
        module: Any = http_client if self.protocol == "http" else grpc_client
        tensor = module.InferInput(input_name, list(batch.shape), datatype)
        tensor.set_data_from_numpy(batch)
        output = module.InferRequestedOutput(output_name)
        try:
            result = await self._call(
                f"inference on {model}",
                lambda: self._client.infer(model, [tensor], outputs=[output]),
                self._request_timeout_s,
            )
        except InferenceServerException as error:
            raise PermanentFailure(
                ReasonCode.PARITY_MISMATCH,
                f"Triton {self.url} failed the smoke inference on {model}: {error.message()}",
            ) from None
        array: np.ndarray[Any, Any] = result.as_numpy(output_name)
        return array

    async def loaded_models(self) -> dict[str, str]:
        """Model name -> state, from Triton's repository index."""
        if self.protocol == "http":
            index = await self._call(
                "repository index",
                lambda: self._client.get_model_repository_index(headers=self._admin_headers),
                self._request_timeout_s,
            )
            entries = index
        else:
            index = await self._call(
                "repository index",
                lambda: self._client.get_model_repository_index(headers=self._admin_headers, as_json=True),
                self._request_timeout_s,
            )
            entries = index.get("models", [])
        return {entry["name"]: entry.get("state", "") for entry in entries}

    async def close(self) -> None:
        if self._lazy_client is not None:
            await self._lazy_client.close()
            self._lazy_client = None


class TritonFleet:
    """Every Triton endpoint of the settings, addressed together."""

    def __init__(self, settings: TritonSettings) -> None:
        self.endpoints = [TritonEndpoint(url, settings) for url in settings.endpoints]

    async def load_everywhere(self, model: str) -> None:
        await asyncio.gather(*(endpoint.load(model) for endpoint in self.endpoints))

    async def unload_everywhere(self, model: str) -> None:
        await asyncio.gather(*(endpoint.unload(model) for endpoint in self.endpoints))

    async def ready_everywhere(self, model: str) -> bool:
        states = await asyncio.gather(*(endpoint.is_ready(model) for endpoint in self.endpoints))
        return all(states)

    async def close(self) -> None:
        await asyncio.gather(*(endpoint.close() for endpoint in self.endpoints), return_exceptions=True)
