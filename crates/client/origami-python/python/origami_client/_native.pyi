"""Type stubs of the native module (re-exported by ``origami_client``)."""

import os
from typing import Any, Mapping, Optional, Union, final

import numpy as np
import numpy.typing as npt

__version__: str
__all__ = [
    "AnswerRejected",
    "Client",
    "EnclaveFailed",
    "EnclaveRestarted",
    "Evidence",
    "EvidenceRejected",
    "KeyRotated",
    "MeasurementChanged",
    "OrigamiError",
    "PolicyError",
    "ReattestedError",
    "SealedRequest",
    "ServerError",
    "__version__",
]

class OrigamiError(Exception):
    """Base class of every error the Origami client raises."""

class PolicyError(OrigamiError):
    """The policy could not be read: a missing file, bad TOML, an unknown key or a wrong type."""

class EvidenceRejected(OrigamiError):
    """The server's evidence does not pass the policy (or is forged)."""

    code: str
    """The cause: ``simulated``, ``bad_simulated_proof``, ``measurement_not_allowed``,
    ``placement_not_allowed``, ``unverified``, ``split_too_early``, ``dcap_failed``, …"""

class ServerError(OrigamiError):
    """The server refused the request or could not be reached."""

    status: int
    """The HTTP status; 0 when no response arrived."""
    code: Optional[str]
    """The server's machine-readable code (``bad_request``, ``queue_full``, ``pads_exhausted``,
    ``unavailable``, …) when it sent one."""
    url: str

class EnclaveFailed(OrigamiError):
    """The enclave opened the request and could not answer (the cause came sealed)."""

    failure: str
    """``bad_input``, ``saturation``, ``accelerator_misbehaved``, ``pad_rejected``,
    ``host_misbehaved`` or ``internal``."""

class AnswerRejected(OrigamiError):
    """The answer was not sealed by the attested enclave for this request."""

class ReattestedError(OrigamiError):
    """Re-attested to the same measurement with a new key; the input was not resent: retry."""

class EnclaveRestarted(ReattestedError):
    """The server's enclave restarted; the client re-attested: retry."""

class KeyRotated(ReattestedError):
    """The server's enclave rotated its session key; the client re-attested: retry."""

class MeasurementChanged(OrigamiError):
    """After a restart the enclave claims another measurement: refused, nothing was sent."""

    was: str
    now: str

@final
class Evidence:
    """The evidence a client verified: what runs where, and what the host sees."""

    @property
    def platform(self) -> str:
        """``simulated``, ``sgx-gramine``, ``tdx`` or ``sev-snp``."""
    @property
    def code_id(self) -> str:
        """Hex SHA-256 of the enclave code (MRENCLAVE under SGX)."""
    @property
    def model_hash(self) -> str:
        """Hex hash of the served model."""
    @property
    def plan_hash(self) -> str:
        """Hex hash of the quantization plan."""
    @property
    def placement(self) -> str:
        """``enclave``, ``slalom`` or ``origami``."""
    @property
    def split(self) -> Optional[int]:
        """The origami split (linear layers in the enclave), else None."""
    @property
    def verify(self) -> bool:
        """Freivalds integrity checks on the blinded layers."""
    @property
    def host_sees(self) -> str:
        """What the untrusted host sees in this placement, in words."""
    @property
    def enclave_key(self) -> str:
        """Hex X25519 session key requests are sealed to."""

@final
class SealedRequest:
    """A request sealed to the attested enclave (``Client.seal``); its answer opens once."""

    @property
    def body(self) -> bytes:
        """The sealed request: the body of ``POST /v1/infer``, the v2 ``sealed_request`` element."""
    def open(self, answer: bytes) -> npt.NDArray[np.float32]:
        """Open the answer's bytes: the model's output.

        Raises AnswerRejected (not sealed by the enclave for this request), EnclaveFailed, or
        OrigamiError when called a second time."""

@final
class Client:
    """A verified connection to one Origami server's enclave; safe to share between threads."""

    def __new__(
        cls,
        url: str,
        policy: Union[str, "os.PathLike[str]", Mapping[str, Any]],
        *,
        timeout: Optional[float] = None,
    ) -> "Client":
        """Fetch the evidence and verify it against ``policy`` (a TOML file or a dict).

        Raises PolicyError, EvidenceRejected or ServerError."""
    @property
    def evidence(self) -> Evidence:
        """The evidence requests are sealed to now."""
    @property
    def reattested(self) -> int:
        """Times this client re-attested."""
    @property
    def url(self) -> str: ...
    def infer(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """One private inference: ``x`` of shape [1, C, H, W] or [C, H, W]; the model's output.

        Raises ValueError or TypeError for bad input, ServerError, EnclaveFailed,
        AnswerRejected, EnclaveRestarted / KeyRotated (retry), MeasurementChanged."""
    def seal(self, x: npt.ArrayLike) -> SealedRequest:
        """Seal ``x`` (as ``infer`` takes it) without sending it, for another transport (a stock
        KServe v2 client); no re-attestation happens on this path."""
