"""Real peers for tests: Orthanc, dcmtk SCUs/SCP, dciodvfy, dcmjs and PostgreSQL.

Every peer runs as a real program on loopback, on a port chosen free at
start-up, and every wait polls a condition against a deadline.

The package is imported as ``import peers``; it needs ``tests`` on the
pytest ``pythonpath``. One module per peer:

* :mod:`peers.orthanc` -- the Orthanc server (the PACS), with its REST
  API in :mod:`peers.orthanc_rest`;
* :mod:`peers.dcmtk` -- ``echoscu``, ``storescu`` and ``storescp``;
* :mod:`peers.dciodvfy` -- IOD conformance checks;
* :mod:`peers.dcmjs` -- dcmjs in Node.js, reading a SEG as OHIF does;
* :mod:`peers.postgres` -- a fresh PostgreSQL database per test;
* :mod:`peers.common` -- free ports, polling with a deadline, processes.

Imports go one way, down to :mod:`peers.common`: a peer module imports
from it and never from another peer (only :mod:`peers.orthanc` builds on
:mod:`peers.orthanc_rest`).
"""

from __future__ import annotations

from . import dcmjs, postgres
from .common import LOOPBACK, PeerError, free_port, require_program, wait_for
from .dciodvfy import assert_dciodvfy_clean, dciodvfy
from .dcmtk import StoreSCP, dcmtk_env, echoscu, storescu
from .orthanc import DICOMWEB_PLUGIN, ORTHANC_BINARY, Modality, Orthanc

__all__ = [
    "DICOMWEB_PLUGIN",
    "LOOPBACK",
    "ORTHANC_BINARY",
    "Modality",
    "Orthanc",
    "PeerError",
    "StoreSCP",
    "assert_dciodvfy_clean",
    "dcmjs",
    "dciodvfy",
    "dcmtk_env",
    "echoscu",
    "free_port",
    "postgres",
    "require_program",
    "storescu",
    "wait_for",
]
