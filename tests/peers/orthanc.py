"""A real Orthanc server for tests, used as the PACS.

Notes
-----
Orthanc (1.10.1 on Debian) cannot be told which address to listen on: it
listens on every interface. Only ever talk to it through ``127.0.0.1``; its
HTTP server is kept local with ``RemoteAccessAllowed: false``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from .common import (
    LOG_TAIL_LINES,
    LOOPBACK,
    PeerError,
    free_port,
    read_log_tail,
    require_program,
    terminate,
    wait_for,
)
from .orthanc_rest import OrthancRest

#: The Orthanc server binary (Debian installs it outside ``$PATH``).
ORTHANC_BINARY = os.environ.get("AINODE_TEST_ORTHANC", "/usr/sbin/Orthanc")
#: The Orthanc DICOMweb plugin; loaded when present.
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
#: Loopback address on which every peer is reached.

Modality = tuple[str, str, int]


class Orthanc(OrthancRest):
    """A real Orthanc server in a temporary directory, for use as a PACS.

    Parameters
    ----------
    aet : str, optional
        Orthanc's own AE title (``DicomAet``), by default ``"ORTHANC"``.
    modalities : mapping of str to (aet, host, port), optional
        Known DICOM modalities (``DicomModalities``), for example
        ``{"ainode": ("AINODE", "127.0.0.1", 11112)}``.
    always_allow_store : bool, optional
        ``DicomAlwaysAllowStore``. When false (the default, as in a guarded
        PACS) Orthanc accepts C-STORE only from calling AE titles listed in
        `modalities`.
    dicomweb : bool, optional
        Load the DICOMweb plugin when it is installed, by default true.
    stable_age : int, optional
        ``StableAge`` in seconds, by default 1.
    extra_config : mapping, optional
        Further configuration keys, applied last.
    startup_timeout : float, optional
        Seconds to wait for ``GET /system`` to answer, by default 30.
    http_timeout : float, optional
        Timeout of each REST call, by default 10 s.
    graceful_stop : bool, optional
        Stop with SIGTERM and wait for Orthanc's orderly shutdown (about
        3.5 s: its HTTP and DICOM servers poll before they stop). By default
        Orthanc is killed at once: its storage is deleted anyway.

    Examples
    --------
    >>> with Orthanc(modalities={"ainode": ("AINODE", "127.0.0.1", 11112)}) as pacs:
    ...     pacs.upload(path)
    """

    def __init__(
        self,
        *,
        aet: str = "ORTHANC",
        modalities: Mapping[str, Modality] | None = None,
        always_allow_store: bool = False,
        dicomweb: bool = True,
        stable_age: int = 1,
        extra_config: Mapping[str, Any] | None = None,
        startup_timeout: float = 30.0,
        http_timeout: float = 10.0,
        graceful_stop: bool = False,
    ) -> None:
        super().__init__()
        self._aet = aet
        self._graceful_stop = graceful_stop
        self._modalities = dict(modalities or {})
        self._always_allow_store = always_allow_store
        self._want_dicomweb = dicomweb
        self._stable_age = stable_age
        self._extra_config = dict(extra_config or {})
        self._startup_timeout = startup_timeout
        self._http_timeout = http_timeout
        self._name = f"ainode-test-{uuid.uuid4().hex[:8]}"
        self._directory: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._http_port = 0
        self._dicom_port = 0
        self.config: dict[str, Any] = {}

    # -- life cycle --------------------------------------------------------

    def __enter__(self) -> Orthanc:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, attempts: int = 3) -> None:
        """Start Orthanc and wait until its REST API answers.

        Parameters
        ----------
        attempts : int, optional
            How many times to try with fresh ports if Orthanc exits during
            start-up (another process may have taken a port), by default 3.

        Raises
        ------
        PeerError
            If Orthanc does not come up; the message ends with its log tail.
        """
        require_program(ORTHANC_BINARY)
        self._directory = Path(tempfile.mkdtemp(prefix="orthanc-"))
        try:
            for attempt in range(1, attempts + 1):
                try:
                    self._start_once()
                    return
                except PeerError:
                    if attempt == attempts:
                        raise
                    self._kill_process()
        except BaseException:
            self.stop()
            raise

    def _start_once(self) -> None:
        """Write a configuration with fresh ports, launch, await readiness."""
        directory = self._require_directory()
        self._http_port, self._dicom_port = free_port(), free_port()
        self.config = self._build_config(directory)
        config_path = directory / "orthanc.json"
        config_path.write_text(json.dumps(self.config, indent=2), encoding="utf-8")
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [ORTHANC_BINARY, "--no-jobs", str(config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=directory,
            )
        self._client = httpx.Client(base_url=self.url, timeout=self._http_timeout, trust_env=False)
        try:
            wait_for(
                self._is_ready,
                timeout=self._startup_timeout,
                interval=0.05,
                what=f"Orthanc REST API at {self.url}",
                ignore=(httpx.TransportError,),
            )
        except TimeoutError as exc:
            raise PeerError(f"{exc}\n--- Orthanc log ---\n{read_log_tail(self.log_path)}") from exc

    def _is_ready(self) -> bool:
        """Whether our own Orthanc (not another server on the port) answers."""
        if self._process is None or self._process.poll() is not None:
            code = None if self._process is None else self._process.returncode
            raise PeerError(
                f"Orthanc exited during start-up (exit code {code})\n"
                f"--- Orthanc log ---\n{read_log_tail(self.log_path)}"
            )
        response = self.http.get("/system", timeout=1.0)
        return response.status_code == 200 and response.json().get("Name") == self._name

    def _build_config(self, directory: Path) -> dict[str, Any]:
        """Return the Orthanc configuration for this instance."""
        config: dict[str, Any] = {
            "Name": self._name,
            "StorageDirectory": str(directory / "storage"),
            "IndexDirectory": str(directory / "index"),
            "HttpPort": self._http_port,
            "DicomPort": self._dicom_port,
            "DicomAet": self._aet,
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SslEnabled": False,
            "DicomTlsEnabled": False,
            "WebDavEnabled": False,
            "HttpDescribeErrors": True,
            "DicomModalities": {
                name: {"AET": aet, "Host": host, "Port": port}
                for name, (aet, host, port) in self._modalities.items()
            },
            "DicomModalitiesInDatabase": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": self._always_allow_store,
            "DicomCheckCalledAet": False,
            "DicomCheckModalityHost": False,
            "UnknownSopClassAccepted": True,
            "DicomScuTimeout": 10,
            "DicomScpTimeout": 30,
            "DicomAssociationCloseDelay": 0,
            "StableAge": self._stable_age,
            "SaveJobs": False,
            "SyncStorageArea": False,
            "OverwriteInstances": False,
            "DeidentifyLogs": True,
            "LuaScripts": [],
            "Plugins": [],
            "ConcurrentJobs": 2,
            "HttpThreadsCount": 10,
            "DicomThreadsCount": 4,
        }
        if self._want_dicomweb and DICOMWEB_PLUGIN.exists():
            config["Plugins"] = [str(DICOMWEB_PLUGIN)]
            config["DicomWeb"] = {
                "Enable": True,
                "Root": "/dicom-web/",
                "EnableWado": True,
                "WadoRoot": "/wado",
                "Ssl": False,
                "Servers": {},
            }
        config.update(self._extra_config)
        return config

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Orthanc and delete its directory.

        With ``graceful_stop`` Orthanc gets SIGTERM, then SIGKILL if it is
        still running after `timeout` seconds; otherwise SIGKILL at once.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for a clean exit before killing, by default 10.
        """
        self._kill_process(timeout)
        if self._directory is not None:
            shutil.rmtree(self._directory)
            self._directory = None

    def _kill_process(self, timeout: float = 10.0) -> None:
        """Stop the Orthanc process, if any, and close the REST client."""
        if self._process is not None:
            terminate(self._process, timeout if self._graceful_stop else 0.0)
            self._process = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def _require_directory(self) -> Path:
        if self._directory is None:
            raise PeerError("Orthanc is not started")
        return self._directory

    # -- addresses ---------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the REST API, e.g. ``http://127.0.0.1:40123``."""
        return f"http://{LOOPBACK}:{self._http_port}"

    @property
    def dicomweb_url(self) -> str:
        """Root URL of the DICOMweb plugin (no trailing slash)."""
        return f"{self.url}/dicom-web"

    @property
    def http_port(self) -> int:
        """HTTP port of the REST API."""
        return self._http_port

    @property
    def dicom_port(self) -> int:
        """DICOM (DIMSE) port."""
        return self._dicom_port

    @property
    def aet(self) -> str:
        """Orthanc's own AE title."""
        return self._aet

    @property
    def log_path(self) -> Path:
        """Orthanc's combined stdout/stderr log."""
        return self._require_directory() / "orthanc.log"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """Return the last `lines` lines of Orthanc's log."""
        return read_log_tail(self.log_path, lines)
