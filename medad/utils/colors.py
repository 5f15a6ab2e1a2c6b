"""Display colours shared by exports, the gallery and the report (predicted vs ground-truth contours)."""

PRED_CONTOUR = "#00ffff"
GT_CONTOUR = "#ff00ff"
HEATMAP_CMAP = "inferno"
