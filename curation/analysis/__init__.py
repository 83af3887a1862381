"""Stage 4: whole-dataset analysis: 3D layout, anomalies, similar images, duplicates, quality."""
