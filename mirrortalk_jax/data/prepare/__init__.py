"""Real talking-face videos -> training records: `mirrortalk data prepare` and the corpus builders (HDTF, CREMA-D,
MEAD, VoxCeleb2). Face analysis needs the `faces` extra."""
