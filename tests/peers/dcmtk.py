"""dcmtk peers for tests: ``echoscu`` and ``storescu`` SCUs, a ``storescp`` SCP.

Notes
-----
* dcmtk tools get ``TCP_NODELAY=1`` in their environment; without it Nagle's
  algorithm adds about 45 ms per image.
* ``storescp`` cannot be told which address to listen on: it listens on every
  interface. Only ever talk to it through ``127.0.0.1``.
"""

from __future__ import annotations

import math
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

import pydicom
from pydicom.dataset import Dataset

from .common import (
    LOOPBACK,
    PeerError,
    free_port,
    read_log_tail,
    require_program,
    terminate,
    wait_for,
)


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
                        terminate(self._process)
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
            raise PeerError(f"{exc}\n--- storescp log ---\n{read_log_tail(self.log_path)}") from exc

    def _answers_echo(self) -> bool:
        if self._process is None or self._process.poll() is not None:
            raise PeerError(
                "storescp exited during start-up\n"
                f"--- storescp log ---\n{read_log_tail(self.log_path)}"
            )
        return echoscu(LOOPBACK, self.port, self.aet, timeout=1.0).returncode == 0

    def stop(self) -> None:
        """Stop storescp and delete its directory."""
        if self._process is not None:
            terminate(self._process)
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
                f"{read_log_tail(self.log_path)}"
            ) from exc
