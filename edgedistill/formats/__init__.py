"""Label formats at the edge of the house, both ways: COCO, YOLO and Label Studio files in and out of
our Sample and Label (DESIGN.md: nothing inside the house speaks those formats).

- `labelled`: what every reader returns (`LabelledSet` of `LabelledImage`), and the checks every reader
  makes against the images;
- `coco`, `yolo`, `label_studio`: one format each, read into labels and written from samples;
- `importer`: a labelled set brought in as a dataset version (`edgedistill import`);
- `exporter`: a dataset version written out in one of the formats (`edgedistill export-labels`).
"""
