"""Client for Origami private inference.

Verify the server's enclave against a policy, seal NumPy inputs to it and open its answers::

    import numpy as np
    import origami_client

    c = origami_client.Client("http://127.0.0.1:8080", policy="policy.toml")
    print(c.evidence.placement, c.evidence.host_sees)
    y = c.infer(np.zeros((1, 1, 28, 28), dtype=np.float32))

Every error is a subclass of :class:`OrigamiError`; match on the class and its attributes
(``code``, ``status``, ``failure``), never on the message.
"""

from ._native import (
    AnswerRejected,
    Client,
    EnclaveFailed,
    EnclaveRestarted,
    Evidence,
    EvidenceRejected,
    KeyRotated,
    MeasurementChanged,
    OrigamiError,
    PolicyError,
    ReattestedError,
    SealedRequest,
    ServerError,
    __version__,
)

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
