"""The REST API of a running Orthanc: instances, modalities, jobs, DICOMweb.

:class:`OrthancRest` is the base of :class:`peers.orthanc.Orthanc`, which
adds the server process; the split keeps each module small.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pydicom
from pydicom.dataset import Dataset

from .common import LOOPBACK, PeerError, dataset_bytes, wait_for


class OrthancRest:
    """Calls to the REST API of an Orthanc server, through an httpx client.

    The client is opened and closed by :class:`peers.orthanc.Orthanc`; until
    then every call raises :class:`PeerError`.
    """

    def __init__(self) -> None:
        self._client: httpx.Client | None = None

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
            data = dataset_bytes(source)
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
