"""WADO-RS Retrieve Frames and Retrieve Rendered (PS3.18 10.4.1.1.3, 10.4.1.1.5).

dicomweb-client is the client.

Frames are checked byte for byte against pydicom's reading of the same file:
native CT slices, the node's own BINARY SEG, a bit-packed SEG whose frames do
not start on byte boundaries, and JPEG 2000 / JPEG-LS inputs (decoded, and as
stored). Rendered images are decoded with Pillow and compared with the PS3.3
windowing formula computed here.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import peers
import pytest
from dicomweb_client import DICOMwebClient
from dicomweb_helpers import AUTH, http_base, part10, stow
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import pack_bits
from pydicom.uid import (
    ExplicitVRLittleEndian,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    SegmentationStorage,
    generate_uid,
)
from requests import HTTPError

from node.db.models import JobState
from node.http.dicomweb import frames as dicomweb_frames

ROUTES = [{"name": "ct", "match": {"Modality": "CT"}, "pipelines": ["ct-anatomy"]}]
OCTET = "application/octet-stream"


# -- helpers -----------------------------------------------------------------------------


def _client(node: Any) -> DICOMwebClient:
    return DICOMwebClient(f"{http_base(node)}/dicom-web", headers=AUTH)


def _url(node: Any, ds: Dataset, tail: str) -> str:
    return (
        f"{http_base(node)}/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/{tail}"
    )


def _parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart/related response."""
    boundary = response.headers["content-type"].split("boundary=")[1].strip('"')
    chunks = response.content.split(f"--{boundary}".encode())
    assert chunks[-1].strip() == b"--"
    parts = []
    for chunk in chunks[1:-1]:
        head, _, body = chunk.partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().strip().split("\r\n"))
        parts.append((headers["Content-Type"], body[:-2]))  # each body ends with CRLF
    return parts


def _unpacked(frame: bytes, rows: int, columns: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(frame, np.uint8), bitorder="little")
    assert len(frame) == (rows * columns + 7) // 8
    return bits[: rows * columns].reshape(rows, columns)


def _windowed(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 LINEAR windowing to 0..255, written out independently of the node."""
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    linear = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.where(values <= low, 0, np.where(values > high, 255, np.rint(linear))).astype(
        np.uint8
    )


def _png(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return np.asarray(image)


def _renamed(path: str) -> Dataset:
    """A pydicom test file with fresh UIDs (several share theirs), pixel data untouched."""
    ds = dcmread(path)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return ds


def _binary_seg(frames: np.ndarray) -> Dataset:
    """A bit-packed (Bits Allocated 1) multi-frame instance, as a BINARY SEG stores its frames."""
    n, rows, columns = frames.shape
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SegmentationStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.PatientName = "SEG", "FRAMES-1", "FRAMES^TEST"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, n
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.PixelData = pack_bits(frames)
    return ds


def _word_frames(frames: np.ndarray) -> Dataset:
    """A natively encoded 16-bit multi-frame instance (Multi-frame Grayscale Word SC)."""
    n, rows, columns = frames.shape
    ds = _binary_seg(np.zeros((1, 1, 1), np.uint8))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = (
        MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    )
    ds.Modality = "OT"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, columns, n
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelData = frames.astype("<u2").tobytes()
    return ds


def _streamed(response: httpx.Response) -> bool:
    """Whether a response came chunked, as a streamed body does.

    A streamed body has no Content-Length known up front.
    """
    return (
        response.headers.get("transfer-encoding") == "chunked"
        and "content-length" not in response.headers
    )


def _inputs_node(make_node: Callable[..., Any], sqlite_url: str, *datasets: Dataset) -> Any:
    node = make_node(sqlite_url, api={"serve_inputs": True})
    if datasets:
        response = stow(http_base(node), [part10(ds) for ds in datasets])
        assert response.status_code == 200, response.text
    return node


# -- results and inputs of an analysed study ------------------------------------------------


@pytest.mark.slow
def test_frames_and_rendered_over_an_analysed_study(
    sqlite_url: str, make_node: Callable[..., Any], chest_phantom: Any
) -> None:
    node = make_node(sqlite_url, routes=ROUTES, api={"serve_inputs": True})
    client = _client(node)
    client.store_instances(chest_phantom.datasets)
    peers.wait_for(
        lambda: any(j.state is JobState.SUCCEEDED for j in node.store.list_jobs()),
        timeout=180,
        interval=0.2,
        what="the job to succeed",
    )
    ct = chest_phantom.datasets[5]
    study, ct_series = str(ct.StudyInstanceUID), str(ct.SeriesInstanceUID)

    # native CT input: the frame is the Pixel Data value, byte for byte
    [frame] = client.retrieve_instance_frames(
        study, ct_series, str(ct.SOPInstanceUID), frame_numbers=[1], media_types=(OCTET,)
    )
    assert frame == ct.PixelData
    raw = httpx.get(_url(node, ct, "frames/1"), headers=AUTH)
    assert raw.headers["content-type"].startswith(
        'multipart/related; type="application/octet-stream"'
    )
    assert _parts(raw) == [(f"{OCTET}; transfer-syntax={ExplicitVRLittleEndian}", ct.PixelData)]

    # the metadata points at the pixel data; the frames URL is the instance URL + /frames/{n}
    [metadata] = httpx.get(_url(node, ct, "metadata"), headers=AUTH).json()
    bulk = metadata["7FE00010"]["BulkDataURI"]
    assert bulk.endswith(f"/instances/{ct.SOPInstanceUID}/bulkdata/7FE00010")
    assert metadata["00280010"]["Value"] == [ct.Rows]
    derived = httpx.get(bulk.rsplit("/bulkdata/", 1)[0] + "/frames/1", headers=AUTH)
    assert _parts(derived)[0][1] == ct.PixelData

    # the node's BINARY SEG: every frame's unpacked bits equal pydicom's decoding
    by_modality = {
        s["00080060"]["Value"][0]: s["0020000E"]["Value"][0]
        for s in client.search_for_series(study)
    }
    [seg_instance] = client.search_for_instances(study, by_modality["SEG"])
    seg_uid = seg_instance["00080018"]["Value"][0]
    seg = client.retrieve_instance(study, by_modality["SEG"], seg_uid)
    assert seg.BitsAllocated == 1 and int(seg.NumberOfFrames) > 2
    expected = seg.pixel_array
    wanted = [int(seg.NumberOfFrames), 1, int(seg.NumberOfFrames) // 2 + 1]
    frames = client.retrieve_instance_frames(
        study, by_modality["SEG"], seg_uid, frame_numbers=wanted
    )
    assert len(frames) == len(wanted)
    for number, data in zip(wanted, frames, strict=True):
        assert np.array_equal(_unpacked(data, seg.Rows, seg.Columns), expected[number - 1])

    # rendered CT: the requested window, else the instance's own (-600/1500), on every pixel
    hu = ct.pixel_array.astype(np.float64) * float(ct.RescaleSlope) + float(ct.RescaleIntercept)
    png = client.retrieve_instance_rendered(
        study,
        ct_series,
        str(ct.SOPInstanceUID),
        media_types=("image/png",),
        params={"window": "40,400"},
    )
    assert np.array_equal(_png(png), _windowed(hu, 40, 400))
    png = client.retrieve_instance_frames_rendered(
        study, ct_series, str(ct.SOPInstanceUID), frame_numbers=[1], media_types=("image/png",)
    )
    assert np.array_equal(_png(png), _windowed(hu, float(ct.WindowCenter), float(ct.WindowWidth)))
    jpeg = client.retrieve_instance_rendered(
        study, ct_series, str(ct.SOPInstanceUID), media_types=("image/jpeg",)
    )
    image = Image.open(io.BytesIO(jpeg))
    assert (image.format, image.mode, image.size) == ("JPEG", "L", (ct.Columns, ct.Rows))

    # the SR has no pixel data: a clear 404, not a 500
    [sr_instance] = client.search_for_instances(study, by_modality["SR"])
    sr = Dataset()
    sr.StudyInstanceUID, sr.SeriesInstanceUID = study, by_modality["SR"]
    sr.SOPInstanceUID = sr_instance["00080018"]["Value"][0]
    for tail in ("frames/1", "rendered"):
        answer = httpx.get(_url(node, sr, tail), headers=AUTH)
        assert answer.status_code == 404, tail
        assert (
            answer.json()["error"]["code"] == "not_found"
            and "no pixel data" in answer.json()["error"]["message"]
        )


# -- bit-packed frames ------------------------------------------------------------------------


def test_bit_packed_frames_off_byte_boundaries(
    sqlite_url: str, make_node: Callable[..., Any]
) -> None:
    # 5 x 7 = 35 bits a frame: frame k starts at bit 35 k, inside a byte for most k
    masks = (np.random.default_rng(7).random((9, 5, 7)) > 0.5).astype(np.uint8)
    masks[4] = 0  # an empty frame renders black
    seg = _binary_seg(masks)
    node = _inputs_node(make_node, sqlite_url, seg)
    stored = dcmread(io.BytesIO(part10(seg))).pixel_array
    assert np.array_equal(stored, masks)

    numbers = [2, 9, 1, 3, 3, 8]
    frames = _client(node).retrieve_instance_frames(
        str(seg.StudyInstanceUID),
        str(seg.SeriesInstanceUID),
        str(seg.SOPInstanceUID),
        frame_numbers=numbers,
    )
    for number, data in zip(numbers, frames, strict=True):
        assert np.array_equal(_unpacked(data, 5, 7), stored[number - 1]), number

    for number in (2, 5, 9):
        png = httpx.get(
            _url(node, seg, f"frames/{number}/rendered"), headers={**AUTH, "Accept": "image/png"}
        )
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert np.array_equal(
            _png(png.content), masks[number - 1] * (255 if masks[number - 1].any() else 0)
        )


# -- compressed inputs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("emri_small_jpeg_2k_lossless.dcm", "image/jp2"),
        ("emri_small_jpeg_ls_lossless.dcm", "image/jls"),
    ],
)
def test_compressed_frames_decoded_or_as_stored(
    sqlite_url: str, make_node: Callable[..., Any], name: str, media_type: str
) -> None:
    ds = _renamed(get_testdata_file(name))
    node = _inputs_node(make_node, sqlite_url, ds)
    client = _client(node)
    ids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    syntax = str(ds.file_meta.TransferSyntaxUID)
    decoded = ds.pixel_array
    stored = list(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    numbers = [10, 3]

    # octet-stream (asked for, or by default): the native frame pydicom decodes
    for media_types in ((OCTET,), None):
        frames = client.retrieve_instance_frames(
            *ids, frame_numbers=numbers, media_types=media_types
        )
        for number, data in zip(numbers, frames, strict=True):
            assert data == decoded[number - 1].astype("<u2").tobytes()

    # transfer-syntax=* or the stored media type: the stored codestream, labelled with its syntax
    for media_types in (((OCTET, "*"),), ((media_type, syntax),), (media_type,)):
        frames = client.retrieve_instance_frames(
            *ids, frame_numbers=numbers, media_types=media_types
        )
        assert frames == [stored[n - 1] for n in numbers]
    answer = httpx.get(
        _url(node, ds, "frames/3"),
        headers={
            **AUTH,
            "Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*',
        },
    )
    assert answer.headers["content-type"].startswith(f'multipart/related; type="{media_type}"')
    assert _parts(answer) == [(f"{media_type}; transfer-syntax={syntax}", stored[2])]
    # what OHIF's image loader sends (parameters unquoted): as stored, or native without
    # transfer-syntax
    cornerstone = "multipart/related; type=application/octet-stream; transfer-syntax=*"
    answer = httpx.get(_url(node, ds, "frames/3"), headers={**AUTH, "Accept": cornerstone})
    assert _parts(answer) == [(f"{media_type}; transfer-syntax={syntax}", stored[2])]
    answer = httpx.get(
        _url(node, ds, "frames/3"), headers={**AUTH, "Accept": f"multipart/related; type={OCTET}"}
    )
    assert _parts(answer) == [
        (f"{OCTET}; transfer-syntax={ExplicitVRLittleEndian}", decoded[2].astype("<u2").tobytes())
    ]

    # no transcoding: another compressed type is 406
    other = "image/jls" if media_type == "image/jp2" else "image/jp2"
    with pytest.raises(HTTPError) as refused:
        client.retrieve_instance_frames(*ids, frame_numbers=[1], media_types=(other,))
    assert refused.value.response.status_code == 406
    assert refused.value.response.json()["error"]["code"] == "not_acceptable"

    # rendered from the decoded frame, min/max when the instance has no window
    png = _png(
        client.retrieve_instance_frames_rendered(
            *ids, frame_numbers=[4], media_types=("image/png",)
        )
    )
    values = decoded[3].astype(np.float64)
    if "WindowCenter" in ds:
        expected = _windowed(values, float(ds.WindowCenter), float(ds.WindowWidth))
    else:
        expected = np.rint((values - values.min()) * 255 / (values.max() - values.min())).astype(
            np.uint8
        )
    assert np.abs(png.astype(int) - expected).max() <= 1  # rounding of exact halves may differ
    assert png.min() == 0 and png.max() == 255


def test_without_a_decoder_only_stored_frames_are_offered(
    sqlite_url: str, make_node: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = _renamed(get_testdata_file("emri_small_jpeg_ls_lossless.dcm"))
    node = _inputs_node(make_node, sqlite_url, ds)
    monkeypatch.setattr(dicomweb_frames.PixelData, "decodable", lambda _self: False)
    url = _url(node, ds, "frames/2")
    octet = httpx.get(url, headers={**AUTH, "Accept": f'multipart/related; type="{OCTET}"'})
    assert octet.status_code == 406 and "no decoder" in octet.json()["error"]["message"]
    anything = httpx.get(
        url, headers=AUTH
    )  # no preference: the stored frame is better than nothing
    [(content_type, body)] = _parts(anything)
    assert content_type.startswith("image/jls; transfer-syntax=")
    assert body == list(generate_frames(ds.PixelData, number_of_frames=10))[1]
    assert httpx.get(_url(node, ds, "rendered"), headers=AUTH).status_code == 406


# -- rendering details ---------------------------------------------------------------------------


def test_rendered_window_viewport_and_monochrome1(
    sqlite_url: str, make_node: Callable[..., Any]
) -> None:
    ct = _renamed(get_testdata_file("CT_small.dcm"))
    inverted = copy.deepcopy(ct)
    inverted.PhotometricInterpretation = "MONOCHROME1"
    inverted.SOPInstanceUID = inverted.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    node = _inputs_node(make_node, sqlite_url, ct, inverted)
    hu = ct.pixel_array.astype(np.float64) * float(ct.RescaleSlope) + float(ct.RescaleIntercept)

    def get(ds: Dataset, accept: str = "image/png", **params: str) -> httpx.Response:
        return httpx.get(
            _url(node, ds, "rendered"), params=params, headers={**AUTH, "Accept": accept}
        )

    plain = _png(get(ct, window="40,400").content)
    assert np.array_equal(plain, _windowed(hu, 40, 400))
    assert np.array_equal(_png(get(inverted, window="40,400").content), 255 - plain)
    # a known pixel: 40 HU at the window's center is mid-grey, whatever the function
    centered = _png(get(ct, window=f"{hu[64, 64]},400,linear-exact").content)
    assert centered[64, 64] in (127, 128)
    sigmoid = _png(get(ct, window=f"{hu[64, 64]},400,sigmoid").content)
    assert sigmoid[64, 64] in (127, 128)
    # no window in the instance and none asked for: the frame's range
    expected = np.rint((hu - hu.min()) * 255 / (hu.max() - hu.min())).astype(np.uint8)
    assert (
        np.abs(_png(get(ct).content).astype(int) - expected).max() <= 1
    )  # rounding of exact halves

    small = get(ct, accept="image/jpeg", viewport="64,32", quality="50")
    assert small.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(small.content)).size == (32, 32)
    assert (
        Image.open(io.BytesIO(get(ct, accept="*/*", viewport="1000,1000").content)).format == "JPEG"
    )
    assert Image.open(io.BytesIO(get(ct, accept="*/*", viewport="1000,1000").content)).size == (
        128,
        128,
    )


# -- long, repeated and streamed frame lists -------------------------------------------------


def test_many_frames_stream_in_the_order_asked(
    sqlite_url: str, make_node: Callable[..., Any]
) -> None:
    frames = np.random.default_rng(11).integers(0, 65536, (1000, 6, 5), dtype=np.uint16)
    multi = _word_frames(frames)
    node = _inputs_node(make_node, sqlite_url, multi)
    expected = dcmread(io.BytesIO(part10(multi))).pixel_array
    numbers = [
        int(n) for n in np.random.default_rng(5).permutation(1000) + 1
    ]  # every frame, shuffled
    answer = httpx.get(
        _url(node, multi, "frames/" + ",".join(map(str, numbers))), headers=AUTH, timeout=60
    )
    assert answer.status_code == 200, answer.text
    assert _streamed(answer)
    parts = _parts(answer)
    assert len(parts) == 1000
    for number, (content_type, body) in zip(numbers, parts, strict=True):
        assert content_type == f"{OCTET}; transfer-syntax={ExplicitVRLittleEndian}"
        assert body == expected[number - 1].astype("<u2").tobytes(), number

    # repeats are answered in place, in the order asked
    answer = httpx.get(_url(node, multi, "frames/1,1,1"), headers=AUTH)
    assert [body for _, body in _parts(answer)] == [expected[0].astype("<u2").tobytes()] * 3
    answer = httpx.get(_url(node, multi, "frames/7,1000,7,2"), headers=AUTH)
    assert [body for _, body in _parts(answer)] == [
        expected[n - 1].astype("<u2").tobytes() for n in (7, 1000, 7, 2)
    ]


def test_frames_are_produced_one_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    multi = _word_frames(np.arange(5 * 4 * 3, dtype=np.uint16).reshape(5, 4, 3))
    path = tmp_path / "multi.dcm"
    path.write_bytes(part10(multi))
    pixels = dicomweb_frames.pixel_data(str(path), "OT")
    encoding = dicomweb_frames.choose_frame_encoding(None, pixels)
    reads: list[int] = []
    native_frame = dicomweb_frames._native_frame
    monkeypatch.setattr(
        dicomweb_frames,
        "_native_frame",
        lambda fp, p, offset, index: reads.append(index + 1) or native_frame(fp, p, offset, index),
    )
    frames = dicomweb_frames.iter_frames(pixels, [4, 2, 4, 5, 2], encoding)
    assert reads == [4]  # the first frame is read up front, the others as the body is sent
    assert next(frames) == multi.pixel_array[3].astype("<u2").tobytes()
    assert reads == [4]
    assert next(frames) == multi.pixel_array[1].astype("<u2").tobytes()
    assert reads == [4, 2]
    assert [len(f) for f in frames] == [24, 24, 24]
    assert reads == [4, 2, 5]  # a repeat is not read again


def test_frame_lists_longer_than_the_instance_or_the_cap_are_refused(
    sqlite_url: str, make_node: Callable[..., Any]
) -> None:
    ct = _renamed(get_testdata_file("CT_small.dcm"))
    jls = _renamed(get_testdata_file("emri_small_jpeg_ls_lossless.dcm"))  # 10 frames
    huge = _binary_seg(np.ones((1100, 2, 2), np.uint8))
    node = _inputs_node(make_node, sqlite_url, ct, jls, huge)

    def get(ds: Dataset, numbers: list[int]) -> httpx.Response:
        return httpx.get(
            _url(node, ds, "frames/" + ",".join(map(str, numbers))), headers=AUTH, timeout=60
        )

    for ds, numbers, limit in (
        (ct, [1, 1], 1),
        (jls, [1] * 11, 10),
        (jls, list(range(1, 11)) + [3], 10),
        (huge, [1] * (dicomweb_frames.MAX_FRAME_LIST + 1), dicomweb_frames.MAX_FRAME_LIST),
    ):
        answer = get(ds, numbers)
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["code"] == "bad_request"
        assert f"holds {len(numbers)} entries; at most {limit} are accepted" in error["message"]
    assert len(_parts(get(jls, [4] * 10))) == 10
    assert (
        len(_parts(get(huge, [9] * dicomweb_frames.MAX_FRAME_LIST)))
        == dicomweb_frames.MAX_FRAME_LIST
    )
    assert (
        get(jls, [11]).status_code == 404
    )  # out of range is still 404, before the length is looked at


def test_each_distinct_frame_is_decoded_once(
    sqlite_url: str, make_node: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    jls = _renamed(get_testdata_file("emri_small_jpeg_ls_lossless.dcm"))
    big = _renamed(get_testdata_file("emri_small_big_endian.dcm"))  # 10 frames, sliced by no one
    node = _inputs_node(make_node, sqlite_url, jls, big)
    decoded = jls.pixel_array
    decodes: list[int] = []
    decode_frame = dicomweb_frames.decode_frame
    monkeypatch.setattr(
        dicomweb_frames,
        "decode_frame",
        lambda pixels, index, *rest: (
            decodes.append(index + 1) or decode_frame(pixels, index, *rest)
        ),
    )
    numbers = [3, 3, 3, 1, 3, 1]
    answer = httpx.get(_url(node, jls, "frames/" + ",".join(map(str, numbers))), headers=AUTH)
    assert [body for _, body in _parts(answer)] == [
        decoded[n - 1].astype("<u2").tobytes() for n in numbers
    ]
    assert decodes == [3, 1]
    stored = list(generate_frames(jls.PixelData, number_of_frames=10))
    answer = httpx.get(
        _url(node, jls, "frames/2,2,2"),
        headers={**AUTH, "Accept": f'multipart/related; type="{OCTET}"; transfer-syntax=*'},
    )
    assert [body for _, body in _parts(answer)] == [stored[1]] * 3

    # big endian data is parsed once per request, not once per frame
    reads: list[str] = []
    dcmread_ = dicomweb_frames.dcmread
    monkeypatch.setattr(
        dicomweb_frames,
        "dcmread",
        lambda path, *a, **k: reads.append(path) or dcmread_(path, *a, **k),
    )
    numbers = [10, 1, 5, 5, 2, 9, 3, 4, 8, 7]
    answer = httpx.get(_url(node, big, "frames/" + ",".join(map(str, numbers))), headers=AUTH)
    assert [body for _, body in _parts(answer)] == [
        big.pixel_array[n - 1].astype("<u2").tobytes() for n in numbers
    ]
    assert len(reads) == 1


def test_a_native_response_over_the_limit_is_refused(
    sqlite_url: str, make_node: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    jls = _renamed(
        get_testdata_file("emri_small_jpeg_ls_lossless.dcm")
    )  # 64 x 64 x 16 bits a frame
    node = _inputs_node(make_node, sqlite_url, jls)
    monkeypatch.setattr(dicomweb_frames, "MAX_RESPONSE_BYTES", 3 * 64 * 64 * 2)
    assert len(_parts(httpx.get(_url(node, jls, "frames/1,2,3"), headers=AUTH))) == 3
    answer = httpx.get(_url(node, jls, "frames/1,2,3,3"), headers=AUTH)
    assert answer.status_code == 413
    assert (
        answer.json()["error"]["code"] == "payload_too_large"
        and "fewer" in answer.json()["error"]["message"]
    )
    stored = httpx.get(
        _url(node, jls, "frames/1,2,3,3"),  # compressed as stored: its size is not known up front
        headers={**AUTH, "Accept": f'multipart/related; type="{OCTET}"; transfer-syntax=*'},
    )
    assert len(_parts(stored)) == 4


def test_a_corrupt_frame_is_an_error_before_the_body_when_asked_first(
    sqlite_url: str, make_node: Callable[..., Any]
) -> None:
    jls = _renamed(get_testdata_file("emri_small_jpeg_ls_lossless.dcm"))
    frames = list(generate_frames(jls.PixelData, number_of_frames=10))
    frames[4] = b"\xff\xd8" + bytes(len(frames[4]) - 2)  # frame 5: not a JPEG-LS codestream
    jls.PixelData = encapsulate(frames)
    node = _inputs_node(make_node, sqlite_url, jls)
    answer = httpx.get(_url(node, jls, "frames/5,1"), headers=AUTH)
    assert answer.status_code == 500
    assert "frame 5 cannot be decoded" in answer.json()["error"]["message"]
    with pytest.raises(
        httpx.RemoteProtocolError
    ):  # found mid-body: the response is cut short, not completed
        httpx.get(_url(node, jls, "frames/1,5"), headers=AUTH)


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tail", "accept", "params", "status"),
    [
        ("frames/2", None, {}, 404),  # a single-frame instance
        ("frames/1,0", None, {}, 404),  # frame numbers start at 1
        ("frames/1,a", None, {}, 422),
        ("frames/1,,2", None, {}, 422),
        ("frames/", None, {}, 404),
        ("frames/1", "image/png", {}, 406),  # frames are multipart
        ("frames/1", 'multipart/related; type="image/jp2"', {}, 406),  # no transcoding
        (
            "frames/1",
            'multipart/related; type="application/octet-stream"; '
            "transfer-syntax=1.2.840.10008.1.2.4.90",
            {},
            406,
        ),
        ("frames/1,1/rendered", None, {}, 400),
        ("frames/3/rendered", None, {}, 404),
        ("rendered", "image/gif", {}, 406),
        ("rendered", None, {"window": "40,0"}, 400),
        ("rendered", None, {"window": "a,b"}, 400),
        ("rendered", None, {"window": "40,400,cubic"}, 400),
        ("rendered", None, {"window": "40"}, 422),
        ("rendered", None, {"viewport": "0,10"}, 400),
        ("rendered", None, {"quality": "0"}, 422),
    ],
)
def test_frame_and_rendered_errors(
    sqlite_url: str,
    make_node: Callable[..., Any],
    tail: str,
    accept: str | None,
    params: dict[str, str],
    status: int,
) -> None:
    ct = _renamed(get_testdata_file("CT_small.dcm"))
    node = _inputs_node(make_node, sqlite_url, ct)
    headers = {**AUTH, **({"Accept": accept} if accept else {})}
    answer = httpx.get(_url(node, ct, tail), params=params, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["status"] == status


def test_frames_need_the_token_and_a_held_instance(
    sqlite_url: str, make_node: Callable[..., Any]
) -> None:
    ct = _renamed(get_testdata_file("CT_small.dcm"))
    node = _inputs_node(make_node, sqlite_url, ct)
    assert httpx.get(_url(node, ct, "frames/1")).status_code == 401
    assert httpx.get(_url(node, ct, "rendered")).status_code == 401
    other = copy.deepcopy(ct)
    other.SOPInstanceUID = generate_uid()
    assert httpx.get(_url(node, other, "frames/1"), headers=AUTH).status_code == 404
    assert httpx.get(_url(node, other, "rendered"), headers=AUTH).status_code == 404
    hidden = make_node(
        sqlite_url.replace("audit.db", "audit2.db"),
        node={"storage_dir": str(node.storage_dir) + "2"},
    )
    response = stow(http_base(hidden), [part10(ct)])
    assert response.status_code == 200
    assert (
        httpx.get(_url(hidden, ct, "frames/1"), headers=AUTH).status_code == 404
    )  # inputs not served


def test_generated_requests_never_fail_the_server(
    sqlite_url: str, make_node: Callable[..., Any]
) -> None:
    masks = (np.random.default_rng(3).random((4, 3, 5)) > 0.5).astype(np.uint8)
    seg = _binary_seg(masks)
    jls = _renamed(get_testdata_file("emri_small_jpeg_ls_lossless.dcm"))
    node = _inputs_node(make_node, sqlite_url, seg, jls)
    accepts = st.one_of(
        st.none(),
        st.sampled_from(
            [
                "*/*",
                "image/*",
                "image/png",
                "image/jpeg;q=0.5, image/png",
                "multipart/related",
                'multipart/related; type="image/jls"; transfer-syntax=*',
                'multipart/related; type="application/octet-stream"; '
                "transfer-syntax=1.2.840.10008.1.2",
                'multipart/related; type="image/*", */*;q=0',
            ]
        ),
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
    )
    frame_lists = st.lists(st.integers(0, 12), min_size=1, max_size=4).map(
        lambda ns: ",".join(map(str, ns))
    )
    windows = st.one_of(
        st.none(),
        st.tuples(
            st.floats(allow_nan=True),
            st.floats(-10, 5000),
            st.sampled_from(["", ",linear", ",sigmoid", ",LINEAR_EXACT"]),
        ).map(lambda t: f"{t[0]},{t[1]}{t[2]}"),
    )

    @settings(
        max_examples=80,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        target=st.sampled_from([seg, jls]),
        frames=frame_lists,
        accept=accepts,
        window=windows,
        rendered=st.booleans(),
        viewport=st.one_of(st.none(), st.sampled_from(["1,1", "3,200", "0,0"])),
    )
    def never_fails(
        target: Dataset,
        frames: str,
        accept: str | None,
        window: str | None,
        rendered: bool,
        viewport: str | None,
    ) -> None:
        params = {
            k: v for k, v in {"window": window, "viewport": viewport}.items() if v and rendered
        }
        headers = {**AUTH, **({"Accept": accept} if accept is not None else {})}
        answer = httpx.get(
            _url(node, target, f"frames/{frames}" + ("/rendered" if rendered else "")),
            params=params,
            headers=headers,
        )
        assert answer.status_code < 500, answer.text
        if answer.status_code >= 400:
            assert answer.json()["error"]["status"] == answer.status_code

    never_fails()
