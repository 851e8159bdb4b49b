"""Post-processing of merged anomaly maps: statistics scopes, binarisation, morphology."""
