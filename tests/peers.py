"""Real DICOM peers for tests: Orthanc, dcmtk SCUs/SCP and dciodvfy.

Every peer runs as a real program on loopback, on a port chosen free at
start-up, and every wait polls a condition against a deadline.

The module is imported as ``import peers``; it needs ``tests`` on the
pytest ``pythonpath``.

Notes
-----
* Orthanc (1.10.1 on Debian) and dcmtk's ``storescp`` cannot be told which
  address to listen on: they listen on every interface. Only ever talk to
  them through ``127.0.0.1``. Orthanc's HTTP server is kept local with
  ``RemoteAccessAllowed: false``.
* dcmtk tools get ``TCP_NODELAY=1`` in their environment; without it Nagle's
  algorithm adds about 45 ms per image.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset

T = TypeVar("T")

#: The Orthanc server binary (Debian installs it outside ``$PATH``).
ORTHANC_BINARY = os.environ.get("AINODE_TEST_ORTHANC", "/usr/sbin/Orthanc")
#: The Orthanc DICOMweb plugin; loaded when present.
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
#: Loopback address on which every peer is reached.
LOOPBACK = "127.0.0.1"

_LOG_TAIL_LINES = 40


class PeerError(RuntimeError):
    """A test peer failed to start, answer or do what it was asked."""


# --------------------------------------------------------------------------
# Generic helpers
# --------------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on `host` right now.

    Parameters
    ----------
    host : str, optional
        Address to probe, by default ``127.0.0.1``.

    Returns
    -------
    int
        A port number the kernel handed out for an ephemeral bind. Another
        process may take it before the caller binds it; the peers below retry
        with a fresh port when their program fails to start.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    predicate: Callable[[], T],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll `predicate` until it returns a truthy value or the deadline passes.

    Parameters
    ----------
    predicate : callable
        Called without arguments; its first truthy result is returned.
    timeout : float, optional
        Seconds before giving up, by default 10.
    interval : float, optional
        Seconds between polls, by default 0.05.
    what : str, optional
        Description of the awaited condition, used in the error message.
    ignore : tuple of exception types, optional
        Exceptions raised by `predicate` that mean "not yet" rather than
        failure (for example ``httpx.TransportError`` while a server starts).

    Returns
    -------
    T
        The first truthy value returned by `predicate`.

    Raises
    ------
    TimeoutError
        If the deadline passes; the last ignored exception is chained.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    last_value: object = None
    while True:
        try:
            value = predicate()
        except ignore as exc:
            last_error = exc
        else:
            if value:
                return value
            last_value = value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            detail = f"last error: {last_error!r}" if last_error else f"last value: {last_value!r}"
            raise TimeoutError(
                f"timed out after {timeout:.1f} s waiting for {what} ({detail})"
            ) from last_error
        time.sleep(min(interval, remaining))


def require_program(program: str) -> str:
    """Return the full path of `program`, or skip the test if it is missing.

    Parameters
    ----------
    program : str
        Program name (looked up on ``$PATH``) or absolute path.

    Returns
    -------
    str
        The resolved path.
    """
    found = shutil.which(program)
    if found is None:
        pytest.skip(f"{program} is not installed")
    return found


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """Return the last `lines` lines of the log file at `path`."""
    if not path.exists():
        return "<no log>"
    text = path.read_text(encoding="utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _terminate(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop `process`: SIGTERM, wait up to `timeout` seconds, then SIGKILL.

    A `timeout` of zero sends SIGKILL straight away.
    """
    if process.poll() is not None:
        return
    if timeout > 0:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10.0)


def _dataset_bytes(dataset: Dataset) -> bytes:
    """Encode `dataset` as a DICOM Part 10 file."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# --------------------------------------------------------------------------
# Orthanc
# --------------------------------------------------------------------------


Modality = tuple[str, str, int]


class Orthanc:
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
        self._client: httpx.Client | None = None
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
            raise PeerError(f"{exc}\n--- Orthanc log ---\n{_log_tail(self.log_path)}") from exc

    def _is_ready(self) -> bool:
        """Whether our own Orthanc (not another server on the port) answers."""
        if self._process is None or self._process.poll() is not None:
            code = None if self._process is None else self._process.returncode
            raise PeerError(
                f"Orthanc exited during start-up (exit code {code})\n"
                f"--- Orthanc log ---\n{_log_tail(self.log_path)}"
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
            _terminate(self._process, timeout if self._graceful_stop else 0.0)
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

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """Return the last `lines` lines of Orthanc's log."""
        return _log_tail(self.log_path, lines)

    @property
    def http(self) -> httpx.Client:
        """The httpx client bound to :attr:`url`."""
        if self._client is None:
            raise PeerError("Orthanc is not started")
        return self._client

    # -- REST helpers ------------------------------------------------------

    def _check(self, response: httpx.Response) -> httpx.Response:
        """Raise :class:`PeerError` for an HTTP error, quoting Orthanc's body."""
        if response.is_error:
            raise PeerError(
                f"Orthanc {response.request.method} {response.request.url.path} -> "
                f"{response.status_code}: {response.text[:2000]}"
            )
        return response

    def get_json(self, path: str, **kwargs: Any) -> Any:
        """``GET path`` and return the decoded JSON body."""
        return self._check(self.http.get(path, **kwargs)).json()

    def post_json(self, path: str, body: Any, **kwargs: Any) -> Any:
        """``POST path`` with a JSON body and return the decoded JSON body."""
        return self._check(self.http.post(path, json=body, **kwargs)).json()

    def system(self) -> dict[str, Any]:
        """Return ``GET /system``."""
        result: dict[str, Any] = self.get_json("/system")
        return result

    def plugins(self) -> list[str]:
        """Return the identifiers of the loaded plugins (``GET /plugins``)."""
        result: list[str] = self.get_json("/plugins")
        return result

    @property
    def has_dicomweb(self) -> bool:
        """Whether the DICOMweb plugin is loaded."""
        return "dicom-web" in self.plugins()

    # -- instances ---------------------------------------------------------

    def upload(self, source: Path | str | bytes | Dataset) -> str:
        """Store one DICOM instance through ``POST /instances``.

        Parameters
        ----------
        source : path, bytes or pydicom.Dataset
            A DICOM file, its bytes, or a dataset to encode.

        Returns
        -------
        str
            The Orthanc identifier of the instance.

        Raises
        ------
        PeerError
            If Orthanc refuses the instance.
        """
        if isinstance(source, Dataset):
            data = _dataset_bytes(source)
        elif isinstance(source, bytes):
            data = source
        else:
            data = Path(source).read_bytes()
        response = self._check(
            self.http.post(
                "/instances", content=data, headers={"Content-Type": "application/dicom"}
            )
        )
        body = response.json()
        if body.get("Status") not in ("Success", "AlreadyStored"):
            raise PeerError(f"Orthanc did not store the instance: {body}")
        orthanc_id: str = body["ID"]
        return orthanc_id

    def instances(self) -> list[str]:
        """Return the Orthanc identifiers of all stored instances."""
        result: list[str] = self.get_json("/instances")
        return result

    def studies(self) -> list[str]:
        """Return the Orthanc identifiers of all stored studies."""
        result: list[str] = self.get_json("/studies")
        return result

    def find(self, level: str, query: Mapping[str, str], *, expand: bool = False) -> list[Any]:
        """Search the index through ``POST /tools/find``.

        Parameters
        ----------
        level : {"Patient", "Study", "Series", "Instance"}
            Query level.
        query : mapping of str to str
            DICOM keyword (e.g. ``"SOPClassUID"``) to value; wildcards allowed.
        expand : bool, optional
            Return full resource descriptions instead of identifiers.

        Returns
        -------
        list
            Orthanc identifiers (or descriptions when `expand`).
        """
        body = {"Level": level, "Query": dict(query), "Expand": expand}
        result: list[Any] = self.post_json("/tools/find", body)
        return result

    def find_instances_by_tag(self, **query: str) -> list[str]:
        """Return identifiers of instances matching DICOM keyword values.

        Examples
        --------
        >>> pacs.find_instances_by_tag(Modality="SEG", StudyInstanceUID=uid)
        """
        return [str(item) for item in self.find("Instance", query)]

    def study_instances(self, study_instance_uid: str) -> list[str]:
        """Return identifiers of the instances of one study."""
        return self.find_instances_by_tag(StudyInstanceUID=study_instance_uid)

    def instance_tags(self, orthanc_id: str) -> dict[str, Any]:
        """Return ``/instances/{id}/simplified-tags`` (keyword -> value)."""
        result: dict[str, Any] = self.get_json(f"/instances/{orthanc_id}/simplified-tags")
        return result

    def get_instance_file(self, orthanc_id: str) -> bytes:
        """Return the stored DICOM file of an instance, byte for byte."""
        return self._check(self.http.get(f"/instances/{orthanc_id}/file")).content

    def get_instance_dataset(self, orthanc_id: str) -> Dataset:
        """Return the stored instance decoded by pydicom."""
        return pydicom.dcmread(io.BytesIO(self.get_instance_file(orthanc_id)))

    def clear(self) -> None:
        """Delete every patient (and so every instance) from Orthanc."""
        for patient in self.get_json("/patients"):
            self._check(self.http.delete(f"/patients/{patient}"))

    # -- modalities and jobs ----------------------------------------------

    def add_modality(
        self, name: str, aet: str, host: str = LOOPBACK, port: int = 104, **options: Any
    ) -> None:
        """Declare or replace a DICOM modality (``PUT /modalities/{name}``).

        Parameters
        ----------
        name : str
            Symbolic name of the modality in Orthanc.
        aet, host, port
            Its AE title and network address.
        **options
            Further modality fields, e.g. ``AllowStore=False``.
        """
        body = {"AET": aet, "Host": host, "Port": port, **options}
        self._check(self.http.put(f"/modalities/{name}", json=body))

    def modalities(self) -> list[str]:
        """Return the names of the declared modalities."""
        result: list[str] = self.get_json("/modalities")
        return result

    def echo(self, modality: str, timeout: float = 10.0) -> bool:
        """C-ECHO a declared modality; return whether it answered."""
        response = self.http.post(
            f"/modalities/{modality}/echo",
            json={"Timeout": math.ceil(timeout)},
            timeout=timeout + 5,
        )
        return response.status_code == 200

    def store_to_modality(
        self,
        modality: str,
        resources: Sequence[str],
        *,
        synchronous: bool = False,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """C-STORE resources to a declared modality (``POST /modalities/{name}/store``).

        Parameters
        ----------
        modality : str
            Name of the modality.
        resources : sequence of str
            Orthanc identifiers (patients, studies, series or instances).
        synchronous : bool, optional
            Wait for the transfer inside the HTTP call; by default the call
            returns a job (``{"ID": ..., "Path": ...}``) to poll with
            :meth:`wait_for_job`.
        timeout : float, optional
            HTTP timeout for a synchronous call, by default 60 s.

        Returns
        -------
        dict
            The job reference, or the transfer summary when `synchronous`.
        """
        body = {"Resources": list(resources), "Synchronous": synchronous}
        result: dict[str, Any] = self.post_json(
            f"/modalities/{modality}/store", body, timeout=timeout
        )
        return result

    def wait_for_job(self, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll ``/jobs/{id}`` until the job ends; return its description.

        Raises
        ------
        PeerError
            If the job fails.
        TimeoutError
            If it is still running at the deadline.
        """

        def finished() -> dict[str, Any] | None:
            job: dict[str, Any] = self.get_json(f"/jobs/{job_id}")
            return job if job["State"] in ("Success", "Failure") else None

        job = wait_for(finished, timeout=timeout, what=f"Orthanc job {job_id}")
        if job["State"] != "Success":
            raise PeerError(f"Orthanc job {job_id} failed: {job}")
        return job

    # -- DICOMweb ----------------------------------------------------------

    def qido(self, path: str = "studies", params: Mapping[str, str] | None = None) -> list[Any]:
        """Run a QIDO-RS query against the DICOMweb plugin (PS3.18 10.6).

        Parameters
        ----------
        path : str, optional
            Resource path under the DICOMweb root, by default ``"studies"``.
        params : mapping, optional
            Query parameters.

        Returns
        -------
        list
            The DICOM JSON results (empty list for ``204 No Content``).
        """
        response = self._check(
            self.http.get(
                f"/dicom-web/{path}",
                params=dict(params or {}),
                headers={"Accept": "application/dicom+json"},
            )
        )
        if response.status_code == 204 or not response.content:
            return []
        result: list[Any] = response.json()
        return result

    def add_dicomweb_server(
        self, name: str, url: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        """Declare or replace a remote DICOMweb server (``PUT /dicom-web/servers/{name}``).

        Parameters
        ----------
        name : str
            Symbolic name of the server in Orthanc.
        url : str
            Its DICOMweb root, e.g. ``http://127.0.0.1:8042/dicom-web``.
        headers : mapping of str to str, optional
            HTTP headers sent with every request (``HttpHeaders``), e.g.
            ``{"Authorization": "Bearer <token>"}``.
        """
        body: dict[str, Any] = {"Url": url}
        if headers:
            body["HttpHeaders"] = dict(headers)
        self._check(self.http.put(f"/dicom-web/servers/{name}", json=body))

    def stow_to_server(
        self, name: str, resources: Sequence[str], *, timeout: float = 60.0
    ) -> dict[str, Any]:
        """STOW-RS resources to a declared DICOMweb server, waiting for the transfer.

        ``POST /dicom-web/servers/{name}/stow`` with ``"Synchronous": true``.

        Parameters
        ----------
        name : str
            Name of the server (see :meth:`add_dicomweb_server`).
        resources : sequence of str
            Orthanc identifiers (patients, studies, series or instances).
        timeout : float, optional
            HTTP timeout, by default 60 s.

        Returns
        -------
        dict
            Orthanc's answer.
        """
        body = {"Resources": list(resources), "Synchronous": True}
        result: dict[str, Any] = self.post_json(
            f"/dicom-web/servers/{name}/stow", body, timeout=timeout
        )
        return result


# --------------------------------------------------------------------------
# dcmtk
# --------------------------------------------------------------------------


def dcmtk_env() -> dict[str, str]:
    """Return the environment for dcmtk tools (``TCP_NODELAY=1`` set)."""
    return {**os.environ, "TCP_NODELAY": "1"}


def _seconds(timeout: float) -> str:
    """dcmtk timeouts are whole seconds, at least one."""
    return str(max(1, math.ceil(timeout)))


def _run_dcmtk(command: list[str], timeout: float, check: bool) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk tool, bounded by a process timeout a little over `timeout`."""
    require_program(command[0])
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=dcmtk_env(),
        timeout=timeout + 10,
        check=False,
    )
    if check and completed.returncode != 0:
        raise PeerError(
            f"{shlex.join(command)} exited with {completed.returncode}\n"
            f"{completed.stdout}{completed.stderr}"
        )
    return completed


def echoscu(
    host: str,
    port: int,
    called_aet: str,
    calling_aet: str = "ECHOSCU",
    *,
    timeout: float = 10.0,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Send a C-ECHO with dcmtk ``echoscu`` (PS3.7 9.1.5).

    Parameters
    ----------
    host, port
        Address of the SCP.
    called_aet, calling_aet : str
        AE titles.
    timeout : float, optional
        Connection, ACSE and DIMSE timeout in seconds, by default 10.
    check : bool, optional
        Raise :class:`PeerError` when echoscu fails.

    Returns
    -------
    subprocess.CompletedProcess
        ``returncode`` 0 means the echo succeeded.
    """
    seconds = _seconds(timeout)
    command = ["echoscu", "-to", seconds, "-ta", seconds, "-td", seconds]
    command += ["-aet", calling_aet, "-aec", called_aet, host, str(port)]
    return _run_dcmtk(command, timeout, check)


def storescu(
    host: str,
    port: int,
    called_aet: str,
    files: Iterable[Path | str],
    calling_aet: str = "STORESCU",
    *,
    propose: str | None = None,
    required_only: bool = True,
    timeout: float = 30.0,
    extra_args: Sequence[str] = (),
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Send files by C-STORE with dcmtk ``storescu`` (PS3.4 Annex B).

    Parameters
    ----------
    host, port
        Address of the SCP.
    called_aet : str
        AE title of the SCP.
    files : iterable of path
        DICOM files to send, in order.
    calling_aet : str, optional
        Our AE title, by default ``"STORESCU"``.
    propose : str, optional
        A storescu transfer-syntax option, e.g. ``"-xs"`` (JPEG lossless),
        ``"-xv"`` (JPEG 2000 lossless), ``"-xi"`` (implicit VR only). By
        default storescu proposes every uncompressed syntax; it always adds a
        context for each file's own transfer syntax as well.
    required_only : bool, optional
        Pass ``-R``: propose only the SOP classes of the files, by default
        true.
    timeout : float, optional
        Connection, ACSE and DIMSE timeout in seconds, by default 30.
    extra_args : sequence of str, optional
        Further storescu options.
    check : bool, optional
        Raise :class:`PeerError` when storescu fails.

    Returns
    -------
    subprocess.CompletedProcess
        ``returncode`` 0 means every file was stored.
    """
    paths = [str(path) for path in files]
    if not paths:
        raise ValueError("storescu needs at least one file")
    seconds = _seconds(timeout)
    command = ["storescu", "-to", seconds, "-ta", seconds, "-td", seconds]
    command += ["-aet", calling_aet, "-aec", called_aet]
    if required_only:
        command.append("-R")
    if propose is not None:
        command.append(propose)
    command += [*extra_args, host, str(port), *paths]
    return _run_dcmtk(command, timeout, check)


class StoreSCP:
    """A real dcmtk ``storescp`` writing received instances to a temp directory.

    Files are named ``<modality>.<SOPInstanceUID>.dcm``; a second copy of the
    same instance overwrites the first. A file is listed only once storescp
    has finished writing it (an ``--exec-on-reception`` hook marks it).

    Parameters
    ----------
    aet : str, optional
        AE title of the SCP, by default ``"STORESCP"``.
    accept_all : bool, optional
        Accept every supported transfer syntax (``+xa``), compressed
        included, by default true; otherwise only uncompressed ones.
    startup_timeout : float, optional
        Seconds to wait until it answers C-ECHO, by default 10.
    extra_args : sequence of str, optional
        Further storescp options.
    """

    def __init__(
        self,
        aet: str = "STORESCP",
        *,
        accept_all: bool = True,
        startup_timeout: float = 10.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.aet = aet
        self._accept_all = accept_all
        self._startup_timeout = startup_timeout
        self._extra_args = list(extra_args)
        self._directory: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def __enter__(self) -> StoreSCP:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def directory(self) -> Path:
        """The temporary working directory."""
        if self._directory is None:
            raise PeerError("storescp is not started")
        return self._directory

    @property
    def output_dir(self) -> Path:
        """Where received instances are written."""
        return self.directory / "received"

    @property
    def log_path(self) -> Path:
        """storescp's combined stdout/stderr log (verbose)."""
        return self.directory / "storescp.log"

    @property
    def _marker_dir(self) -> Path:
        return self.directory / "complete"

    def start(self, attempts: int = 3) -> None:
        """Start storescp on a free port and wait until it answers C-ECHO.

        Raises
        ------
        PeerError
            If storescp does not come up; the message ends with its log tail.
        """
        require_program("storescp")
        self._directory = Path(tempfile.mkdtemp(prefix="storescp-"))
        self.output_dir.mkdir()
        self._marker_dir.mkdir()
        try:
            for attempt in range(1, attempts + 1):
                try:
                    self._start_once()
                    return
                except PeerError:
                    if attempt == attempts:
                        raise
                    if self._process is not None:
                        _terminate(self._process)
                        self._process = None
        except BaseException:
            self.stop()
            raise

    def _start_once(self) -> None:
        self.port = free_port()
        marker = shlex.quote(str(self._marker_dir)) + "/#f"
        command = ["storescp", "-v", "-aet", self.aet, "-od", str(self.output_dir)]
        command += ["-pm", "-dhl", "-fe", ".dcm", "-ta", "30", "-td", "60"]
        command += ["-xs", "-xcr", f"touch {marker}"]
        if self._accept_all:
            command.append("+xa")
        command += [*self._extra_args, str(self.port)]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dcmtk_env(),
            )
        try:
            wait_for(
                self._answers_echo,
                timeout=self._startup_timeout,
                what=f"storescp on port {self.port}",
            )
        except TimeoutError as exc:
            raise PeerError(f"{exc}\n--- storescp log ---\n{_log_tail(self.log_path)}") from exc

    def _answers_echo(self) -> bool:
        if self._process is None or self._process.poll() is not None:
            raise PeerError(
                f"storescp exited during start-up\n--- storescp log ---\n{_log_tail(self.log_path)}"
            )
        return echoscu(LOOPBACK, self.port, self.aet, timeout=1.0).returncode == 0

    def stop(self) -> None:
        """Stop storescp and delete its directory."""
        if self._process is not None:
            _terminate(self._process)
            self._process = None
        if self._directory is not None:
            shutil.rmtree(self._directory)
            self._directory = None

    def files(self) -> list[Path]:
        """Return the completely written received files, sorted by name."""
        return sorted(
            self.output_dir / marker.name
            for marker in self._marker_dir.iterdir()
            if (self.output_dir / marker.name).is_file()
        )

    def datasets(self) -> list[Dataset]:
        """Return the received instances decoded by pydicom."""
        return [pydicom.dcmread(path) for path in self.files()]

    def wait_for_count(self, count: int, timeout: float = 10.0) -> list[Path]:
        """Wait until at least `count` distinct instances were received.

        Returns
        -------
        list of Path
            The received files.

        Raises
        ------
        TimeoutError
            With storescp's log tail, if too few arrive before the deadline.
        """

        def enough() -> list[Path] | None:
            files = self.files()
            return files if len(files) >= count else None

        try:
            return wait_for(enough, timeout=timeout, what=f"{count} file(s) at storescp")
        except TimeoutError as exc:
            raise TimeoutError(
                f"{exc}; received {len(self.files())}\n--- storescp log ---\n"
                f"{_log_tail(self.log_path)}"
            ) from exc


# --------------------------------------------------------------------------
# dciodvfy
# --------------------------------------------------------------------------


def dciodvfy(source: Path | str | Dataset, *, timeout: float = 60.0) -> list[str]:
    """Run David Clunie's ``dciodvfy`` and return its error lines.

    Parameters
    ----------
    source : path or pydicom.Dataset
        A DICOM Part 10 file, or a dataset (written to a temporary file).
    timeout : float, optional
        Process timeout in seconds, by default 60.

    Returns
    -------
    list of str
        The lines that begin with ``Error`` (warnings are dropped).
    """
    program = require_program("dciodvfy")
    if isinstance(source, Dataset):
        with tempfile.TemporaryDirectory(prefix="dciodvfy-") as directory:
            path = Path(directory) / "object.dcm"
            path.write_bytes(_dataset_bytes(source))
            return dciodvfy(path, timeout=timeout)
    completed = subprocess.run(
        [program, str(source)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        check=False,
    )
    output = completed.stdout + completed.stderr
    return [line.strip() for line in output.splitlines() if line.lstrip().startswith("Error")]


def assert_dciodvfy_clean(source: Path | str | Dataset, *, ignore: Iterable[str] = ()) -> None:
    """Fail unless ``dciodvfy`` reports no errors for `source`.

    Parameters
    ----------
    source : path or pydicom.Dataset
        A DICOM file, or a dataset (written to a temporary Part 10 file).
    ignore : iterable of str, optional
        Substrings of error lines to tolerate (known, justified deviations).

    Raises
    ------
    AssertionError
        Listing every remaining error line.
    """
    errors = dciodvfy(source)
    tolerated = list(ignore)
    remaining = [line for line in errors if not any(text in line for text in tolerated)]
    if remaining:
        name = "dataset" if isinstance(source, Dataset) else str(source)
        listing = "\n  ".join(remaining)
        raise AssertionError(f"dciodvfy found {len(remaining)} error(s) in {name}:\n  {listing}")
