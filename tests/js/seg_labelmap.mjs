// Parse a DICOM SEG the way OHIF (cornerstone) does, with dcmjs's Cornerstone
// segmentation adapter, and write the label maps it builds.
//
// Usage: node seg_labelmap.mjs SEG.dcm OUT_PREFIX SOURCE1.dcm [SOURCE2.dcm ...]
// The sources are given in the frame order of the findings; OUT_PREFIX.json
// receives {rows, columns, frames, labelmaps, segments} and OUT_PREFIX.N.u16
// the N-th label map as little-endian uint16 [frame][row][column].
import fs from "node:fs";
import dcmjs from "dcmjs";

const { DicomMessage, DicomMetaDictionary } = dcmjs.data;

function readDataset(path) {
  const buffer = fs.readFileSync(path);
  const arrayBuffer = buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength);
  const dicomData = DicomMessage.readFile(arrayBuffer);
  const dataset = DicomMetaDictionary.naturalizeDataset(dicomData.dict);
  return { arrayBuffer, dataset };
}

function numbers(value) {
  return (Array.isArray(value) ? value : [value]).map(Number);
}

function metadataProviderFor(instances) {
  return {
    get(type, imageId) {
      const ds = instances.get(imageId);
      if (!ds) return undefined;
      const iop = numbers(ds.ImageOrientationPatient);
      switch (type) {
        case "instance":
          return ds;
        case "imagePlaneModule":
          return {
            rowCosines: iop.slice(0, 3),
            columnCosines: iop.slice(3, 6),
            imagePositionPatient: numbers(ds.ImagePositionPatient),
            pixelSpacing: numbers(ds.PixelSpacing),
            rows: ds.Rows,
            columns: ds.Columns,
            frameOfReferenceUID: ds.FrameOfReferenceUID,
          };
        case "generalSeriesModule":
          return { seriesInstanceUID: ds.SeriesInstanceUID, modality: ds.Modality };
        case "sopCommonModule":
          return { sopInstanceUID: ds.SOPInstanceUID, sopClassUID: ds.SOPClassUID };
        case "imagePixelModule":
          return { rows: ds.Rows, columns: ds.Columns, bitsAllocated: ds.BitsAllocated };
        case "frameNumber":
          return undefined;
        default:
          return undefined;
      }
    },
  };
}

const [segPath, outPrefix, ...sourcePaths] = process.argv.slice(2);
if (!segPath || !outPrefix || sourcePaths.length === 0) {
  console.error("usage: node seg_labelmap.mjs SEG.dcm OUT_PREFIX SOURCE.dcm...");
  process.exit(2);
}
const instances = new Map();
const imageIds = sourcePaths.map((path, index) => {
  const imageId = `ainode:${index}`;
  instances.set(imageId, readDataset(path).dataset);
  return imageId;
});
const { arrayBuffer } = readDataset(segPath);
const toolState = dcmjs.adapters.Cornerstone.Segmentation.generateToolState(
  imageIds,
  arrayBuffer,
  metadataProviderFor(instances),
);
const first = instances.get(imageIds[0]);
toolState.labelmapBufferArray.forEach((buffer, index) => {
  fs.writeFileSync(`${outPrefix}.${index}.u16`, Buffer.from(buffer));
});
const segments = (toolState.segMetadata.data || [])
  .filter((item) => item)
  .map((item) => ({
    number: item.SegmentNumber,
    label: item.SegmentLabel,
    color: item.RecommendedDisplayCIELabValue,
  }));
fs.writeFileSync(
  `${outPrefix}.json`,
  JSON.stringify({
    rows: first.Rows,
    columns: first.Columns,
    frames: imageIds.length,
    labelmaps: toolState.labelmapBufferArray.length,
    segments,
    dcmjs: JSON.parse(fs.readFileSync(new URL("./node_modules/dcmjs/package.json", import.meta.url))).version,
  }),
);
