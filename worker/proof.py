"""The smoke inference that proves a loaded model on one Triton endpoint: Triton's answer must match MLflow's.

Used by a promotion (on every endpoint) and by a fleet repair (on the endpoint it reloaded).
"""

from __future__ import annotations

from schemas.model_ready import SignatureSummary
from worker.parity import ParityCase, check_parity
from worker.triton_fleet import TritonEndpoint


async def prove_on(
    endpoint: TritonEndpoint,
    triton_model: str,
    case: ParityCase,
    signature: SignatureSummary,
    *,
    rtol: float,
    atol: float,
) -> None:
    """Run ``case`` through ``triton_model`` on ``endpoint``; PermanentFailure when the answers differ."""
    spec_in, spec_out = signature.inputs[0], signature.outputs[0]
    actual = await endpoint.infer(triton_model, spec_in.name, case.tensor, spec_in.datatype, spec_out.name)
    check_parity(case, actual, where=f"Triton {endpoint.url} ({triton_model})", rtol=rtol, atol=atol)
