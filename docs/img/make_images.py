"""Regenerate the example pictures of docs/viewers.md.

Run: ``.venv/bin/python docs/img/make_images.py`` (needs pypdfium2 to render
the PDF page). Writes ``sc_overlay.png`` and ``pdf_page1.png`` / ``pdf_page2.png``
next to this file, from the chest phantom analysed by ct-anatomy.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

import pypdfium2
from PIL import Image

from dicom_sr import AlgorithmIdentity, DeviceIdentity
from dicom_sr.geometry import source_frames
from dicom_sr.pdf import render_pdf
from dicom_sr.render import frames_to_show, render_frame
from node.demo.phantom import make_chest_phantom
from pipelines.ct_anatomy import CtAnatomyPipeline
from pipelines.volume import load_volume


def main() -> None:
    phantom = make_chest_phantom(n_slices=60, rows=256, columns=256, pixel_spacing=(1.5, 1.5))
    findings = CtAnatomyPipeline().run(load_volume(phantom.datasets))
    by_uid = {str(ds.SOPInstanceUID): ds for ds in phantom.datasets}
    sources = [by_uid[uid] for uid in findings.source_sop_instance_uids]
    device = DeviceIdentity(
        software_versions="0.1.0", device_serial_number="demo", institution_name="Example Hospital"
    )
    algorithm = AlgorithmIdentity(name=findings.pipeline_name, version=findings.pipeline_version)
    frames = source_frames(sources, findings)
    key = frames_to_show(findings, all_frames=False)[-1]
    Image.fromarray(render_frame(frames, findings.segments, key)).save(HERE / "sc_overlay.png")
    document = pypdfium2.PdfDocument(render_pdf(sources, findings, device, algorithm))
    for index in range(min(2, len(document))):
        page = document[index].render(scale=1.2).to_pil().convert("RGB")
        page.save(HERE / f"pdf_page{index + 1}.png", optimize=True)


if __name__ == "__main__":
    main()
